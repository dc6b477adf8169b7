"""What a run tells the operator at the terminal: record.json as plain lines.

`runbook run` prints `story(record)` after every run, whatever the outcome:
the outcome and exit code, the failed step, each failed check as
``name: expected X, actual Y``, the error with its details, what a dry run
would change, the exact next command (``next: ...``, shell-quoted, copyable)
and where the evidence is. One fact per line, no colours, nothing that is
not already in the (redacted) record::

    >>> print(story({"outcome": "refused", "exit_code": 4, "failed_step": "2. Take the host lock",
    ...              "checks": [], "error": {"type": "NotConfirmed", "message": "no",
    ...              "details": {"flag": "--confirm staging"}},
    ...              "next_command": "runbook run deploy --env staging --confirm staging"}))
    outcome:      refused (exit 4)
    failed step:  2. Take the host lock
    error:        NotConfirmed: no
      flag:       --confirm staging
    next:         runbook run deploy --env staging --confirm staging

The next command is built by `rerun_command` from the parameters the run was
given, so it can be pasted as it is.
"""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# `runbook run` flags that stand for a notebook parameter (cli.py)
FLAGS = {
    "env": "--env",
    "dry_run": "--dry-run",
    "confirm": "--confirm",
    "approved_by": "--approved-by",
    "break_stale_lock": "--break-stale-lock",
}
# boolean flags: present when True, absent when False
SWITCHES = frozenset({"dry_run", "break_stale_lock"})
MESSAGE_LINES = 12
PREVIEW_ITEMS = 20


class Text(str):
    """A string a notebook cell shows as it is (no quotes, no escapes).

    IPython shows a returned `str` as its repr (``'runbook run ... \\'x\\''``),
    which cannot be pasted into a shell; a `Text` shows itself.

    >>> Text("runbook run rollback -p reason 'a b'")
    runbook run rollback -p reason 'a b'
    """

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


class Summary(dict[str, Any]):
    """A step's result: its facts as a dict (for code and tests), shown in a notebook as one line.

    A step that returned a dict, a bool or a DataFrame made the notebook show
    a 19-line dict, a bare `True` or an `Empty DataFrame` under every cell.

    >>> r = Summary("snapshot: 1a2b3c4d5e6f recorded as last good", head="1a2b3c4d5e6f")
    >>> r
    snapshot: 1a2b3c4d5e6f recorded as last good
    >>> r["head"]
    '1a2b3c4d5e6f'
    """

    def __init__(self, line: str, /, **facts: Any):
        super().__init__(**facts)
        self.line = line

    def __repr__(self) -> str:
        return self.line

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.line)


def _value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def rerun_command(
    scenario: str,
    params: Mapping[str, Any],
    *,
    add: Mapping[str, Any] | None = None,
    drop: Iterable[str] = (),
) -> str:
    """The `runbook run` command line for `scenario` with `params`, changed by `add`/`drop`.

    Parameters with a flag of their own use it (`--env`, `--confirm`,
    `--dry-run`...), the rest are `-p NAME VALUE`; every word is shell-quoted.

    >>> rerun_command("rollback", {"env": "staging", "reason": "red; rm -rf /"},
    ...               add={"confirm": "staging"})
    "runbook run rollback --env staging -p reason 'red; rm -rf /' --confirm staging"
    >>> rerun_command("deploy", {"env": "sandbox", "dry_run": True}, drop=["dry_run"])
    'runbook run deploy --env sandbox'
    """
    merged = {k: v for k, v in params.items() if k not in set(drop)}
    merged.update(add or {})
    words = ["runbook", "run", scenario]
    if "env" in merged:
        words += ["--env", _value(merged["env"])]
    flagged: list[str] = []
    for name, value in merged.items():
        if name == "env":
            continue
        if name in SWITCHES:
            if value is True:
                flagged.append(FLAGS[name])
            continue
        if name in FLAGS:
            if value is not None:
                flagged += [FLAGS[name], _value(value)]
            continue
        words += ["-p", name, _value(value)]
    return shlex.join(words + flagged)


def parameter_fix(
    params: Mapping[str, Any], name: str, declared: Iterable[str]
) -> dict[str, Any] | None:
    """`params` with an unknown parameter name replaced by the closest declared one.

    >>> parameter_fix({"bakup": "x.sql.gz"}, "bakup", ["backup", "env"])
    {'backup': 'x.sql.gz'}
    >>> parameter_fix({"zzz": 1}, "zzz", ["env"]) is None
    True
    """
    close = difflib.get_close_matches(name, list(declared), n=1)
    if not close:
        return None
    return {(close[0] if k == name else k): v for k, v in params.items()}


def _line(label: str, value: Any) -> str:
    return f"{label + ':':<13} {value}"


def story(record: Mapping[str, Any], run_dir: Path | None = None) -> str:
    """The plain-text story of one run's record (see the module docstring)."""
    lines = [_line("outcome", f"{record.get('outcome')} (exit {record.get('exit_code')})")]
    if record.get("dry_run"):
        lines.append(_line("mode", "dry run: nothing was changed"))
    failed = [c for c in record.get("checks") or [] if c.get("status") == "failed"]
    # a definition of done not met names no failed step: its first failed check's step
    step = record.get("failed_step") or next((c["step"] for c in failed if c.get("step")), None)
    if step:
        lines.append(_line("failed step", step))
    for check in failed:
        lines.append(
            _line(
                "check failed",
                f"{check.get('name')}: expected {check.get('expected')}, "
                f"actual {check.get('actual')}",
            )
        )
    error = record.get("error") or {}
    if error:
        message = str(error.get("message") or "").strip().splitlines() or [""]
        lines.append(_line("error", f"{error.get('type')}: {message[0]}"))
        for more in message[1:MESSAGE_LINES]:
            lines.append(f"  {more}")
        if len(message) > MESSAGE_LINES:
            lines.append(f"  ... ({len(message) - MESSAGE_LINES} more lines in record.json)")
        for key, value in (error.get("details") or {}).items():
            lines.append(f"  {key + ':':<11} {value}")
    for section, items in (record.get("preview") or {}).items():
        items = list(items)
        lines.append(_line("would change", f"{section} ({len(items)})"))
        for item in items[:PREVIEW_ITEMS]:
            lines.append(f"  {item}")
        if len(items) > PREVIEW_ITEMS:
            lines.append(f"  ... ({len(items) - PREVIEW_ITEMS} more in record.json)")
    nxt = record.get("next_command")
    lines.append(_line("next", nxt or "none: " + _no_next(record)))
    if run_dir is not None:
        lines.append(_line("evidence", run_dir))
    return "\n".join(lines)


def _no_next(record: Mapping[str, Any]) -> str:
    if record.get("outcome") == "ok":
        return "the run met its definition of done"
    return "no command follows from this outcome; read the error and the evidence"


def default_next(
    record: Mapping[str, Any],
    scenario: str,
    params: Mapping[str, Any],
    declared: Iterable[str] = (),
) -> str | None:
    """The next command when the notebook named none, from the outcome alone.

    A dry run that went well: the same command for real. Missing confirmation:
    the same command with `--confirm ENV`. A lock held by a run that died: the
    same with `--break-stale-lock`. A parameter the notebook refused: the same
    with that parameter to fill in (`'<name>'`).

    >>> default_next({"outcome": "ok", "dry_run": True}, "deploy", {"dry_run": True})
    'runbook run deploy'
    >>> default_next({"outcome": "refused", "error": {"type": "NotConfirmed", "message": "",
    ...     "details": {"environment": "staging"}}}, "deploy", {"env": "staging"})
    'runbook run deploy --env staging --confirm staging'
    """
    outcome = record.get("outcome")
    error = record.get("error") or {}
    details = error.get("details") or {}
    message = str(error.get("message") or "")
    if outcome == "ok" and record.get("dry_run"):
        return rerun_command(scenario, params, drop=["dry_run"])
    if outcome == "refused" and details.get("pin"):
        # an unknown or changed host key: fetch the key to check it out of band, then pin it
        return str(details["pin"])
    if error.get("type") == "NotConfirmed":
        env = details.get("environment") or params.get("env") or record.get("environment")
        return rerun_command(scenario, params, add={"confirm": env})
    if outcome == "refused" and (
        details.get("holder_state") in ("dead", "stale") or "--break-stale-lock" in message
    ):
        return rerun_command(scenario, params, add={"break_stale_lock": True})
    if outcome == "parameters":
        key = details.get("key")
        if key and key in set(declared):
            return rerun_command(scenario, params, add={key: f"<{key}>"})
    return None
