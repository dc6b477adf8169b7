"""The "internet": the SaaS the runbook calls, at their real hostnames, with the twin's CA.

A second container on the twin's bridge runs nginx with one server block per
hostname (SNI; one certificate from the per-twin test CA names them all) and
proxies each to the SaaS stub server (sandbox/stubs/saas.py) under its path
prefix. The stub server runs on this machine, on the bridge address and on
127.0.0.1: the stubs' control endpoints (faults) answer loopback clients only,
so the operator side drives them and nothing that arrives through the
internet container can.

Example::

    >>> SAAS["api.github.com"], SAAS["status.cloud.google.com"]
    ('/github', '/status/google')
    >>> "api.dealix.me" in hosts_text({"api.dealix.me": "10.231.7.2"}, base="")
    True
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from runbook.twin.common import run

# hostname -> the stub server's path prefix for it
SAAS: dict[str, str] = {
    "api.github.com": "/github",
    "sentry.io": "/sentry",
    "eu.posthog.com": "/posthog",
    "eu.i.posthog.com": "/posthog",
    "status.anthropic.com": "/status/anthropic",
    "status.openai.com": "/status/openai",
    "status.cloud.google.com": "/status/google",
    "api.anthropic.com": "/anthropic",
    "api.openai.com": "/openai",
    "generativelanguage.googleapis.com": "/google",
}
API_NAMES = ("api.dealix.me", "dealix.me")


def _new_p256(key: Path, out: Path, *extra: str) -> list[str]:
    """`openssl req` with a new unencrypted P-256 key in `key`, the request (or cert) in `out`."""
    return [
        "openssl",
        "req",
        *extra,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(out),
    ]


def make_ca(d: Path, label: str) -> tuple[Path, Path]:
    """A throwaway test CA for one twin (P-256, 30 days). Returns (cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    crt, key = d / "ca.crt", d / "ca.key"
    run(
        [
            *_new_p256(key, crt, "-x509"),
            "-days",
            "30",
            "-subj",
            f"/O=Dealix runbook/CN=Dealix twin test CA {label}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        ],
        "test CA",
    )
    key.chmod(0o600)
    return crt, key


def make_leaf(d: Path, name: str, sans: list[str], ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for `sans`, signed by the twin's CA. Returns (cert, key)."""
    crt, key, csr, ext = (d / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    run(
        [*_new_p256(key, csr), "-subj", f"/CN={sans[0]}"],
        f"cert {name}",
    )
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={','.join('DNS:' + s for s in sans)}\n"
    )
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca[0]),
            "-CAkey",
            str(ca[1]),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "30",
            "-extfile",
            str(ext),
        ],
        f"sign {name}",
    )
    csr.unlink()
    ext.unlink()
    key.chmod(0o600)
    return crt, key


def nginx_conf(stubs: str) -> str:
    """nginx server blocks: each SaaS hostname -> http://<stubs>/<its prefix>/."""
    blocks = [
        "# Written by `runbook twin up`: the SaaS at their real names -> the stubs.\n"
        "proxy_http_version 1.1;\nclient_max_body_size 25m;\nproxy_buffering off;\n"
    ]
    for name, prefix in SAAS.items():
        blocks.append(f"""server {{
    listen 443 ssl;
    server_name {name};
    ssl_certificate /etc/ssl/saas/saas.crt;
    ssl_certificate_key /etc/ssl/saas/saas.key;
    location / {{
        proxy_pass http://{stubs}{prefix}/;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Proto https;
    }}
}}
""")
    return "\n".join(blocks)


def hosts_text(names: dict[str, str], base: str | None = None) -> str:
    """A private /etc/hosts: the machine's own lines (localhost, its name), then `names`."""
    if base is None:
        base = Path("/etc/hosts").read_text()
    lines = [ln for ln in base.splitlines() if not any(n in ln.split()[1:] for n in names)]
    lines.append("# runbook twin: the twin and the internet container")
    lines.extend(f"{ip} {name}" for name, ip in names.items())
    return "\n".join(lines) + "\n"


def runner_names(twin_ip: str, internet_ip: str) -> dict[str, str]:
    names = {n: twin_ip for n in API_NAMES}
    names.update({n: internet_ip for n in SAAS})
    return names


def stub_control(stubs_url: str, path: str, body: object) -> object:
    """POST to a loopback-only control endpoint of the stubs (faults, CI runs)."""
    if not stubs_url.startswith("http://127.0.0.1:"):
        raise ValueError(f"stub control goes to the loopback stubs only, not {stubs_url!r}")
    req = urllib.request.Request(  # noqa: S310 (checked above: http on loopback)
        stubs_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback URL of our own)
        return json.loads(resp.read() or b"null")
