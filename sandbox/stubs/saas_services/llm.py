"""The LLM provider stubs: Anthropic Messages, OpenAI Chat Completions, Gemini generateContent.

Each checks its provider's credential and request shape, answers a fixed
reply with plausible usage, and, while ``/_stub/llm/{provider}`` has it
down, fails the way that provider does when overloaded. The calls are
counted per outcome in the state; the status pages (status.py) read the
same up/down switch.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import (
    EVERY_METHOD,
    BodyError,
    Service,
    as_dict,
    iso_millis,
    now_ms,
    read_json,
    secret_eq,
)
from .control import control_body, control_error, local

PROVIDERS = ("anthropic", "openai", "google")


def default_section(stamp: str) -> dict[str, Any]:
    """Every provider up, no calls yet."""
    return {
        p: {
            "down": False,
            "down_since": None,
            "changed_at": stamp,
            "calls": {"ok": 0, "failed": 0, "rejected": 0},
        }
        for p in PROVIDERS
    }


def fill_section(loaded: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Complete each provider's entry of a loaded state."""
    for provider in PROVIDERS:
        entry = loaded.setdefault(provider, defaults[provider])
        for key, sub in defaults[provider].items():
            entry.setdefault(key, sub)
        for key in ("ok", "failed", "rejected"):
            entry["calls"].setdefault(key, 0)


def random_token(length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class LLMs(Service):
    """``/anthropic/...``, ``/openai/...``, ``/google/...`` and the providers' switch."""

    def routes(self) -> list[Route]:
        return [
            Route("/anthropic/v1/messages", self.anthropic_messages, methods=["POST"]),
            Route("/openai/v1/chat/completions", self.openai_chat, methods=["POST"]),
            Route(
                "/google/v1beta/models/{model}:generateContent",
                self.google_generate,
                methods=["POST"],
            ),
            Route(
                "/google/v1/models/{model}:generateContent", self.google_generate, methods=["POST"]
            ),
            Route("/_stub/llm/{provider}", local(self.control_llm), methods=["POST"]),
        ]

    def fallbacks(self) -> list[Route]:
        return [
            Route(prefix + "/{rest:path}", handler, methods=EVERY_METHOD)
            for prefix, handler in (
                ("/anthropic", self.anthropic_not_found),
                ("/openai", self.openai_not_found),
                ("/google", self.google_not_found),
            )
        ]

    def llm_count(self, provider: str, outcome: str) -> None:
        self.state["llm"][provider]["calls"][outcome] += 1
        self.store.save()

    def llm_down(self, provider: str) -> bool:
        return bool(self.state["llm"][provider]["down"])

    @staticmethod
    def reply_text(provider: str) -> str:
        name = {"anthropic": "Anthropic", "openai": "OpenAI", "google": "Gemini"}[provider]
        return f"Hello! This is a reply from the sandbox stand-in for the {name} API."

    def reply(self, provider: str, prompt: str) -> tuple[str, int, int]:
        """The reply to a good call, counted: its text, the prompt's tokens and its own."""
        text = self.reply_text(provider)
        self.llm_count(provider, "ok")
        return text, approx_tokens(prompt), approx_tokens(text)

    # -- Anthropic --------------------------------------------------------

    @staticmethod
    def anthropic_error(status: int, kind: str, message: str) -> Response:
        request_id = "req_" + random_token(24)
        return JSONResponse(
            {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": request_id,
            },
            status,
            headers={"request-id": request_id},
        )

    async def anthropic_messages(self, request: Request) -> Response:
        key = request.headers.get("x-api-key")
        if not key:
            # Current SDKs send the API key as a bearer token instead; the API takes both.
            scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(401, "authentication_error", "x-api-key header is required")
        if not secret_eq(key, self.cfg["anthropic_api_key"]):
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        try:
            body = await read_json(request)
        except BodyError:
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(
                400, "invalid_request_error", "There was an error parsing the body of your request."
            )
        body = as_dict(body)
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                self.llm_count("anthropic", "rejected")
                return self.anthropic_error(
                    400, "invalid_request_error", f"{field}: Field required"
                )
        if body.get("stream"):
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(
                400, "invalid_request_error", "stream: not supported by the sandbox stub"
            )
        if self.llm_down("anthropic"):
            self.llm_count("anthropic", "failed")
            return self.anthropic_error(529, "overloaded_error", "Overloaded")
        prompt = json.dumps(body.get("messages")) + json.dumps(body.get("system", ""))
        text, input_tokens, output_tokens = self.reply("anthropic", prompt)
        return JSONResponse(
            {
                "id": "msg_01" + random_token(22),
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": output_tokens,
                    "service_tier": "standard",
                },
            },
            headers={"request-id": "req_" + random_token(24)},
        )

    async def anthropic_not_found(self, request: Request) -> Response:
        return self.anthropic_error(404, "not_found_error", "Not Found")

    # -- OpenAI -----------------------------------------------------------

    @staticmethod
    def openai_error(
        status: int, message: str, kind: str, param: str | None = None, code: str | None = None
    ) -> Response:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": param, "code": code}},
            status,
            headers={"x-request-id": "req_" + secrets.token_hex(16)},
        )

    async def openai_chat(self, request: Request) -> Response:
        header = request.headers.get("authorization", "").strip()
        scheme, _, key = header.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if not key:
            self.llm_count("openai", "rejected")
            return self.openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username. You can obtain an API key "
                "from https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
            )
        if not secret_eq(key, self.cfg["openai_api_key"]):
            self.llm_count("openai", "rejected")
            masked = f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 10 else "*" * len(key)
            return self.openai_error(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        try:
            body = await read_json(request)
        except BodyError:
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
                "invalid_request_error",
            )
        body = as_dict(body)
        if not body.get("model"):
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400, "you must provide a model parameter", "invalid_request_error"
            )
        if "messages" not in body:
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400,
                "Missing required parameter: 'messages'.",
                "invalid_request_error",
                "messages",
                "missing_required_parameter",
            )
        if body.get("stream"):
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400, "stream: not supported by the sandbox stub", "invalid_request_error", "stream"
            )
        if self.llm_down("openai"):
            self.llm_count("openai", "failed")
            return self.openai_error(
                503, "The server is overloaded or not ready yet.", "server_error"
            )
        text, prompt_tokens, completion_tokens = self.reply(
            "openai", json.dumps(body.get("messages"))
        )
        return JSONResponse(
            {
                "id": "chatcmpl-" + random_token(29),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": 0,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    },
                },
                "service_tier": "default",
                "system_fingerprint": "fp_" + secrets.token_hex(5),
            },
            headers={"x-request-id": "req_" + secrets.token_hex(16)},
        )

    async def openai_not_found(self, request: Request) -> Response:
        return self.openai_error(
            404,
            f"Invalid URL ({request.method} {request.url.path.removeprefix('/openai')})",
            "invalid_request_error",
        )

    # -- Google Gemini ----------------------------------------------------

    @staticmethod
    def google_error(
        status: int, message: str, state: str, details: list[dict[str, Any]] | None = None
    ) -> Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": state}
        if details:
            error["details"] = details
        return JSONResponse({"error": error}, status)

    async def google_generate(self, request: Request) -> Response:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            self.llm_count("google", "rejected")
            return self.google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
                "PERMISSION_DENIED",
            )
        if not secret_eq(key, self.cfg["google_api_key"]):
            # Gemini answers a wrong key with 400 INVALID_ARGUMENT, not 401.
            self.llm_count("google", "rejected")
            return self.google_error(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        try:
            body = await read_json(request)
        except BodyError:
            self.llm_count("google", "rejected")
            return self.google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        body = as_dict(body)
        if not body.get("contents"):
            self.llm_count("google", "rejected")
            return self.google_error(
                400,
                "* GenerateContentRequest.contents: contents is not specified\n",
                "INVALID_ARGUMENT",
            )
        if self.llm_down("google"):
            self.llm_count("google", "failed")
            return self.google_error(
                503, "The model is overloaded. Please try again later.", "UNAVAILABLE"
            )
        text, prompt_tokens, completion_tokens = self.reply(
            "google", json.dumps(body.get("contents"))
        )
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": completion_tokens,
                    "totalTokenCount": prompt_tokens + completion_tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                },
                "modelVersion": request.path_params["model"],
                "responseId": random_token(22),
            }
        )

    async def google_not_found(self, request: Request) -> Response:
        return self.google_error(404, "Requested entity was not found.", "NOT_FOUND")

    # -- Control ----------------------------------------------------------

    async def control_llm(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            return control_error(f"unknown provider {provider!r}", 404)
        body = await control_body(request)
        down = body.get("down")
        if not isinstance(down, bool):
            return control_error("down must be true or false")
        entry = self.state["llm"][provider]
        if down != entry["down"]:
            stamp = iso_millis(now_ms())
            entry["down"] = down
            entry["down_since"] = stamp if down else None
            entry["changed_at"] = stamp
            self.store.save()
        return JSONResponse({"provider": provider, **entry})
