"""Stand-in for the SaaS the sandbox cannot reach.

One Starlette app serves GitHub Actions, Sentry (ingestion and query API),
PostHog (capture and the legacy events API), the three LLM providers and
their status pages, each under its own path prefix and with the real API's
request and response shapes, error bodies included. Each service lives in
its own module of saas_services/ (github, sentry, posthog, llm, status);
this file only builds the app from them and runs it.

Faults are driven through the loopback-only ``/_stub/...`` control
endpoints (saas_services/control.py and each service's own). All mutable
state lives in one JSON file, one section per service, that is rewritten
atomically on every change, so a fault set before a restart of the stub is
still active after it. The state never holds a credential.

Run::

    python sandbox/stubs/saas.py --host 127.0.0.1 --port P \\
        --config CONFIG.json --state STATE.json
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Run as a script (as the sandbox and the twin start it) this directory is on
# sys.path already; imported from elsewhere, saas_services must still resolve.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn
from saas_services import github, llm, posthog, sentry
from saas_services.common import AccessLog, Service, StateStore, iso_millis, log, now_ms
from saas_services.control import Control
from saas_services.status import StatusPages
from starlette.applications import Starlette
from starlette.middleware import Middleware

STATE_VERSION = 1

# Settings the orchestrator always writes; the non-secret ones have the
# sandbox's usual values so the app can be built in-process with fewer keys.
CONFIG_DEFAULTS = {
    "github_repo": "VoXc2/dealix",
    "sentry_project_id": "1",
    "sentry_org": "dealix",
    "sentry_project": "dealix-api",
    "posthog_project_id": "1",
}
SECRET_CONFIG_KEYS = (
    "github_token",
    "sentry_auth_token",
    "sentry_public_key",
    "posthog_project_api_key",
    "posthog_personal_api_key",
    "anthropic_api_key",
    "openai_api_key",
    "google_api_key",
)


def default_state(now: int | None = None) -> dict[str, Any]:
    """A healthy world: green CI on main, no events, every provider up."""
    now = now_ms() if now is None else now
    stamp = iso_millis(now)
    return {
        "version": STATE_VERSION,
        "created_at": stamp,
        "github": github.default_section(now),
        "sentry": sentry.default_section(),
        "posthog": posthog.default_section(),
        "llm": llm.default_section(stamp),
    }


def merge_defaults(loaded: dict[str, Any]) -> dict[str, Any]:
    """Fill whatever an older or hand-edited state file lacks."""
    defaults = default_state()
    for section, value in defaults.items():
        if section not in loaded or type(loaded[section]) is not type(value):
            loaded[section] = value
        elif isinstance(value, dict):
            for key, sub in value.items():
                loaded[section].setdefault(key, sub)
    llm.fill_section(loaded["llm"], defaults["llm"])
    return loaded


def create_app(config: Mapping[str, str], state_path: str | Path) -> Starlette:
    """The stub app over a config mapping and a state file (created if missing)."""
    merged = {**CONFIG_DEFAULTS, **{k: str(v) for k, v in config.items()}}
    cfg = {k: merged.get(k, "") for k in (*CONFIG_DEFAULTS, *SECRET_CONFIG_KEYS)}
    store = StateStore(Path(state_path), default_state, merge_defaults)
    services: list[Service] = [
        github.GitHub(cfg, store),
        sentry.Sentry(cfg, store),
        posthog.PostHog(cfg, store),
        llm.LLMs(cfg, store),
        StatusPages(cfg, store),
        Control(cfg, store),
    ]
    # The catch-alls last: a known path with an unknown method must reach them.
    routes = [r for s in services for r in s.routes()]
    routes += [r for s in services for r in s.fallbacks()]
    app = Starlette(routes=routes, middleware=[Middleware(AccessLog)])
    app.state.services = services
    return app


def load_config(path: Path) -> dict[str, str]:
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise SystemExit(f"{path}: config must be a JSON object")
    missing = [k for k in SECRET_CONFIG_KEYS if not config.get(k)]
    if missing:
        raise SystemExit(f"{path}: missing config keys: {', '.join(missing)}")
    return {str(k): str(v) for k, v in config.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SaaS stubs for the Dealix sandbox")
    # repeatable: isolated mode also listens on the operator's end of a veth pair
    parser.add_argument("--host", action="append")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    hosts = args.host or ["127.0.0.1"]
    app = create_app(load_config(args.config), args.state)
    log.info("listening on %s port %d, state in %s", ", ".join(hosts), args.port, args.state)
    # uvicorn's access log prints query strings, where some keys travel; ours masks them.
    if len(hosts) == 1:
        uvicorn.run(
            app,
            host=hosts[0],
            port=args.port,
            access_log=False,
            log_config=None,
            server_header=False,
        )
        return 0

    socks = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, args.port))
        socks.append(sock)
    config = uvicorn.Config(app, access_log=False, log_config=None, server_header=False)
    uvicorn.Server(config).run(sockets=socks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
