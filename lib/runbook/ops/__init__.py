"""Operations (layer 3): one module per concern (HTTP, the Dealix API, GitHub, Sentry, PostHog, git,
alembic, Postgres, services, backups, logs, the app's .env, the firewall, fail2ban), each
written once.

They never import the session: they take an `OpsContext` (runbook.core.context) that the
session implements."""
