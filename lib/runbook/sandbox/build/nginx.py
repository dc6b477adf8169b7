"""nginx: the reverse proxy in front of the API, as api.dealix.me on production.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> lay = Layout(Path(tempfile.mkdtemp()))
    >>> write_nginx_config({"nginx_port": 8080, "api_port": 8001}, lay)
    >>> "proxy_pass http://127.0.0.1:8001;" in (lay.nginx_dir / "nginx.conf").read_text()
    True
"""

from __future__ import annotations

import pwd
from typing import Any

from runbook.sandbox.build.host import is_root
from runbook.sandbox.layout import Layout


def write_nginx_config(state: dict[str, Any], lay: Layout) -> None:
    tmp = lay.nginx_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    logs = lay.log_dir / "nginx"
    logs.mkdir(parents=True, exist_ok=True)
    user = ""
    if is_root():
        # nginx's master keeps root; workers drop to www-data as on Debian.
        user = "user www-data;\n" if _user_exists("www-data") else "user root;\n"
    iso = state.get("isolated") or {}
    # isolated mode: nginx listens on every address of the server namespace (as
    # production's on :80), where the namespace's firewall governs who reaches it
    extra_listen = f"\n        listen {state['nginx_port']};" if iso.get("services_ns") else ""
    (lay.nginx_dir / "nginx.conf").write_text(f"""\
# Written by `runbook sandbox`; rewritten at every `up`.
{user}worker_processes 1;
daemon off;
pid {lay.run_dir / "nginx.pid"};
error_log {logs / "error.log"} warn;

events {{
    worker_connections 256;
}}

http {{
    access_log {logs / "access.log"};
    server_tokens off;
    client_body_temp_path {tmp / "client_body"};
    proxy_temp_path {tmp / "proxy"};
    fastcgi_temp_path {tmp / "fastcgi"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};

    # api.dealix.me -> 127.0.0.1:8001 on production
    server {{
        listen 127.0.0.1:{state["nginx_port"]};{extra_listen}
        server_name api.dealix.me;

        location / {{
            proxy_pass http://127.0.0.1:{state["api_port"]};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
