"""The session in its notebook kernel: the error hook, the output redaction, the verdict display.

Everything here does nothing (or prints) outside IPython, so a session runs
the same in a script, under pytest, under papermill and in JupyterLab.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runbook.core.kernel import ipython
from runbook.core.redact import Redactor
from runbook.errors import RunbookError


def install_error_hook(on_error: Callable[[BaseException], None]) -> None:
    """In a kernel, hand any uncaught cell error to `on_error` before the traceback."""
    ip = ipython()
    if ip is None:
        return

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None):
        with contextlib.suppress(Exception):
            on_error(value)
        # our errors already say what happened and carry redacted evidence;
        # the full traceback would only repeat it
        if isinstance(value, RunbookError):
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset, exception_only=True)
        else:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

    ip.set_custom_exc((BaseException,), handler)


_KERNEL_REDACTORS: list[Redactor] = []


def redact_kernel_output(redactor: Redactor) -> None:
    """Pass everything the kernel sends to the notebook through `redactor`.

    The library redacts what it returns, but a cell can print anything it
    holds (`print(s.read_file(".env").decode())`, a bytes repr, a traceback).
    Every stream, display, result and error message of an ipykernel leaves
    through its `session.send`: wrapping that one call covers them all,
    under papermill, `runbook run` and JupyterLab alike.
    """
    ip = ipython()
    kernel_session = getattr(getattr(ip, "kernel", None), "session", None)
    if kernel_session is None:
        return
    if redactor not in _KERNEL_REDACTORS:
        _KERNEL_REDACTORS.append(redactor)
    if getattr(kernel_session.send, "_runbook_redacts", False):
        return
    send = kernel_session.send

    def redacting_send(stream: Any, msg_or_type: Any, content: Any = None, *a: Any, **kw: Any):
        for r in _KERNEL_REDACTORS:
            if isinstance(msg_or_type, dict) and "content" in msg_or_type:
                msg_or_type = {**msg_or_type, "content": r.redact_obj(msg_or_type["content"])}
            if content is not None:
                content = r.redact_obj(content)
        return send(stream, msg_or_type, content, *a, **kw)

    redacting_send._runbook_redacts = True  # type: ignore[attr-defined]
    kernel_session.send = redacting_send


_URL = re.compile(r"https?://[^\s)\]]+")


def shorten_urls(text: str, limit: int = 48) -> str:
    """Long URLs in a table cell cut to their host and last part, so the table fits the page.

    The record keeps them whole.

    >>> shorten_urls("commented on issue #42 http://127.0.0.1:8/github/repos/acme/dealix/issues/42#c1")
    'commented on issue #42 http://127.0.0.1:8/…/42#c1'
    >>> shorten_urls("see https://api.dealix.me/health")
    'see https://api.dealix.me/health'
    """

    def cut(m: re.Match[str]) -> str:
        url = m.group(0)
        if len(url) <= limit:
            return url
        scheme, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        return f"{scheme}://{host}/…/{path.rsplit('/', 1)[-1]}"

    return _URL.sub(cut, text)


def display_verdict(table: Any, record: Mapping[str, Any], record_path: Path) -> None:
    """Show the definition-of-done table: coloured HTML in a kernel, plain text elsewhere.

    `record` is the run's record as just written (scenario, environment,
    dry_run, duration_s, run_dir, outcome). Long URLs in the cells are shortened.
    """
    table = table.map(lambda v: shorten_urls(v) if isinstance(v, str) else v)
    failed = int((table["status"] == "failed").sum()) if len(table) else 0
    verdict = (
        "DEFINITION OF DONE MET" if not failed else f"DEFINITION OF DONE NOT MET ({failed} failed)"
    )
    if ipython() is None:
        print(verdict)
        print(table.to_string(index=False))
        return
    from IPython.display import HTML, display

    colors = {"passed": "#1a7f37", "failed": "#cf222e", "not available": "#9a6700"}
    styled = table.style.map(
        lambda v: f"color: {colors.get(v, 'inherit')}; font-weight: bold", subset=["status"]
    ).hide(axis="index")
    color = "#1a7f37" if not failed else "#cf222e"
    display(
        HTML(
            f'<h3 style="color:{color}">{verdict}</h3>'
            f"<p>{record['scenario']} on <b>{record['environment']}</b>"
            f"{' (dry run)' if record['dry_run'] else ''}, {record['duration_s']:.1f}s, "
            f"evidence in <code>{record['run_dir']}</code></p>"
        )
    )
    display(styled)
    display(
        {
            "application/vnd.dealix.runbook.record+json": {
                "scenario": record["scenario"],
                "environment": record["environment"],
                "outcome": record["outcome"],
                "record": str(record_path),
            },
            "text/plain": f"record: {record_path}",
        },
        raw=True,
    )


def display_recap(frame: Any) -> None:
    """Show a fleet run's host x step table (Ansible's PLAY RECAP): above the verdict.

    Each cell is that host's outcome of the step (`ok`, `failed`, `not started`,
    `refused`, `-` where the step ran elsewhere) or of its check (`passed`, ...).
    """
    if ipython() is None:
        print("RECAP (host x step)")
        print(frame.to_string())
        return
    from IPython.display import HTML, display

    colors = {
        "ok": "#1a7f37",
        "passed": "#1a7f37",
        "failed": "#cf222e",
        "refused": "#cf222e",
        "not started": "#9a6700",
        "not available": "#9a6700",
    }
    styled = frame.style.map(lambda v: f"color: {colors.get(v, 'inherit')}; font-weight: bold")
    display(HTML("<h3>Recap: host x step</h3>"))
    display(styled)
