"""The SaaS stubs, one module per service; sandbox/stubs/saas.py serves them as one app.

github (Actions runs, issue comments), sentry (ingestion, events and stats API,
the error spike), posthog (capture, events API), llm (Anthropic, OpenAI,
Gemini), status (the providers' status pages), control (the loopback-only
``/_stub/...`` endpoints every service shares); common holds what they share:
time formats, body decoding, the state file, the access log.
"""
