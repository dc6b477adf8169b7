"""The nginx load balancer in front of the API servers: drain one, put it back, list.

Everything here runs against the OpsContext of the load balancer host (one
gate), never an API host. A drain is three plain steps the guard reads as they
are (no sed with variables, no here-doc):

1. the upstream block of the lb's nginx config is read (`read_file`), the
   server's line gets nginx's `down` flag in Python (`set_down`, pure), and the
   whole file is written back atomically (`write_file`: the guard's path
   rules, the dry run and the confirmation apply to it);
2. `nginx -t` checks it (a bad file is put back before anything reloads), then
   `systemctl reload nginx`: a graceful reload. New workers never send to a
   `down` server; old workers finish their in-flight requests, then exit;
3. the wait for in-flight requests counts the lb's established TCP
   connections to that server (`ss -Htn state established dst ADDR:PORT`),
   polled until there are none.

Why `ss` on the lb and not nginx's stub_status: stub_status counts the
*client* connections of the whole server (`Active connections: 7`), not which
upstream they are proxied to, so it cannot say "api2 has nothing in flight";
nor can the API host's own count (it also sees the runbook's direct health
probes). The lb's sockets to ADDR:PORT are exactly the requests (and idle
keepalive connections) it still has with that server; after the graceful
reload they close as the old workers finish, so zero means drained.

Example (in a notebook, `lb` the lb host's OpsContext)::

    nlb = LoadBalancer(lb)
    nlb.drain("10.0.0.12:443")        # down, reloaded, waited for in-flight
    nlb.drained()                     # ['10.0.0.12:443']
    nlb.undrain("10.0.0.12:443")

The pure parts::

    >>> conf = "upstream dealix_api {\\n    server 10.0.0.11:443;\\n    server 10.0.0.12:443;\\n}\\n"
    >>> print(set_down(conf, "dealix_api", "10.0.0.12:443", True), end="")
    upstream dealix_api {
        server 10.0.0.11:443;
        server 10.0.0.12:443 down;
    }
    >>> upstream_servers(set_down(conf, "dealix_api", "10.0.0.12:443", True), "dealix_api")
    {'10.0.0.11:443': False, '10.0.0.12:443': True}
"""

from __future__ import annotations

import re
import time
from typing import Protocol

from runbook.core.context import OpsContext
from runbook.errors import ParameterError, RunbookError

LB_CONF = "/etc/nginx/conf.d/dealix-lb.conf"
UPSTREAM = "dealix_api"
DRAIN_WAIT_S = 30.0
_SERVER = re.compile(r"^(?P<indent>\s*)server\s+(?P<addr>\S+?)(?P<params>(?:\s+[^;]*)?);", re.M)


class LbContext(OpsContext, Protocol):
    """The lb host's context: an OpsContext that can also write a file (the gate)."""

    def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> bool: ...


def _block(text: str, upstream: str) -> tuple[int, int]:
    """The span of the body of `upstream NAME { ... }` in `text`."""
    m = re.search(r"^\s*upstream\s+" + re.escape(upstream) + r"\s*\{", text, re.M)
    if not m:
        raise ParameterError(
            f"no `upstream {upstream} {{` block in the load balancer's nginx config",
            key="upstream",
            fix="name the upstream the API servers are in (the lb group's `upstream` variable)",
        )
    end = text.find("}", m.end())
    if end < 0:
        raise ParameterError(f"the upstream block {upstream} is not closed", key="upstream")
    return m.end(), end


def upstream_servers(text: str, upstream: str) -> dict[str, bool]:
    """{server address: marked down} of the upstream block, in order."""
    start, end = _block(text, upstream)
    return {m["addr"]: "down" in m["params"].split() for m in _SERVER.finditer(text[start:end])}


def set_down(text: str, upstream: str, server: str, down: bool) -> str:
    """`text` with `server`'s line in the upstream marked `down` (or not); other lines and
    other parameters (weight=, max_fails=) unchanged. Refuses an unknown server, and
    draining the last server still up (the service would have no API server).

    >>> conf = "upstream u {\\n  server a:443 weight=2;\\n}\\n"
    >>> set_down(conf, "u", "a:443", True)
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: a:443 is the last server up in upstream u: draining it leaves the service with no API server
    >>> set_down(conf, "u", "b:443", True)
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: b:443 is not in upstream u (servers: a:443)
    """
    servers = upstream_servers(text, upstream)
    if server not in servers:
        raise ParameterError(
            f"{server} is not in upstream {upstream} (servers: {', '.join(servers)})",
            key="server",
        )
    if down and not servers[server] and sum(not d for d in servers.values()) == 1:
        raise ParameterError(
            f"{server} is the last server up in upstream {upstream}: draining it leaves "
            "the service with no API server",
            key="server",
        )
    start, end = _block(text, upstream)

    def one(m: re.Match[str]) -> str:
        if m["addr"] != server:
            return m[0]
        params = [p for p in m["params"].split() if p != "down"]
        if down:
            params.append("down")
        return f"{m['indent']}server {server}" + "".join(f" {p}" for p in params) + ";"

    return text[:start] + _SERVER.sub(one, text[start:end]) + text[end:]


def count_established(ss_output: str) -> int:
    """Connections in `ss -Htn state established ...` output (one per non-empty line).

    >>> count_established("0 0 10.0.0.10:5412 10.0.0.12:443\\n\\n0 0 10.0.0.10:5413 10.0.0.12:443\\n")
    2
    """
    return sum(1 for line in ss_output.splitlines() if line.strip())


class LoadBalancer:
    """nginx on the lb host: its upstream of API servers (see the module docstring)."""

    def __init__(self, ctx: LbContext, *, conf: str = LB_CONF, upstream: str = UPSTREAM):
        self.ctx = ctx
        self.conf = conf
        self.upstream = upstream

    def _text(self) -> str:
        return self.ctx.read_file(self.conf).decode()

    def servers(self) -> dict[str, bool]:
        """{server: drained} of the upstream, as the config on the lb says now."""
        return upstream_servers(self._text(), self.upstream)

    def drained(self) -> list[str]:
        """The upstream's servers marked down (drained and not put back)."""
        return [s for s, down in self.servers().items() if down]

    def in_flight(self, server: str) -> int:
        """The lb's established TCP connections to `server` (ADDR:PORT) now."""
        r = self.ctx.probe(
            ["ss", "-Htn", "state", "established", "dst", server], label="lb-in-flight"
        )
        return count_established(r.stdout)

    def _apply(self, server: str, down: bool) -> bool:
        """Write the config with `server` down (or up), test it, reload gracefully.
        False when nothing changed (already so, or a dry run)."""
        before = self._text()
        after = set_down(before, self.upstream, server, down)
        if after == before:
            return False
        if not self.ctx.write_file(self.conf, after.encode()):
            return False  # dry run: recorded as would-change
        test = self.ctx.probe(["nginx", "-t"], warn=True, label="nginx-test")
        if not test.ok:
            # never reload a config nginx refuses: put the one that worked back
            self.ctx.write_file(self.conf, before.encode())
            raise RunbookError(
                f"nginx -t refused the config with {server} {'down' if down else 'up'} "
                f"(put back as it was): {test.stderr.strip()[-400:]}"
            )
        self.ctx.run(["systemctl", "reload", "nginx"], label="nginx-reload")
        return True

    def drain(self, server: str, *, wait: float = DRAIN_WAIT_S) -> dict[str, float | int]:
        """Take `server` out of rotation and wait until the lb has nothing in flight to it.

        Raises a RunbookError when connections remain after `wait` seconds (the server stays
        drained: a request still running there is not cut off by the runbook)."""
        changed = self._apply(server, True)
        t0 = time.monotonic()
        left = self.in_flight(server)
        if self.ctx.dry_run:
            return {"changed": int(changed), "in_flight": left, "waited": 0.0}
        while left and time.monotonic() - t0 < wait:
            time.sleep(0.25)
            left = count_established(
                self.ctx.poll(f"ss -Htn state established dst {server}", kind="lb-in-flight").stdout
            )
        waited = round(time.monotonic() - t0, 2)
        if left:
            raise RunbookError(
                f"{server} is drained but the load balancer still has {left} connection(s) "
                f"to it after {waited:.0f} s"
            )
        return {"changed": int(changed), "in_flight": 0, "waited": waited}

    def undrain(self, server: str) -> bool:
        """Put `server` back into rotation (True when it was drained)."""
        return self._apply(server, False)
