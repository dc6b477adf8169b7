"""`runbook run`: execute a scenario notebook headless into its evidence folder.

What it adds over plain papermill (FIELD_NOTES.md): parameter names are
checked against the notebook's declared parameters (papermill only warns,
and does not escape names); a parameter equal to a loaded secret is
refused; the executed notebook always lands in the run's evidence folder
(never stdout); and record.json always ends with the true outcome and exit
code, whatever happened to the kernel.

Exit codes:

====  =========================================================
0     ok: every step ran, the definition of done is met
1     failed: a step failed (the record names it)
2     bad parameters or profile: refused before anything ran
3     definition of done not met
4     refused by a runbook rule, or confirmation missing
5     interrupted (SIGINT or SIGTERM); the notebook is saved
6     timed out
7     the kernel died
====  =========================================================
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from runbook.errors import ParameterError
from runbook.evidence import RECORD_SCHEMA, Evidence, iso, new_run_dir, utc_now
from runbook.paths import notebooks_dir
from runbook.profile import load_profile
from runbook.redact import Redactor
from runbook.secrets import SecretStore

KERNEL_NAME = "dealix-runbook"
EXIT = {
    "ok": 0,
    "failed": 1,
    "parameters": 2,
    "dod_not_met": 3,
    "refused": 4,
    "interrupted": 5,
    "timed_out": 6,
    "kernel_died": 7,
}
_BY_ERROR = {
    "DefinitionOfDoneNotMet": "dod_not_met",
    "Forbidden": "refused",
    "NotConfirmed": "refused",
    "ParameterError": "parameters",
    "CommandTimedOut": "timed_out",
    "KeyboardInterrupt": "interrupted",
}


def notebook_path(scenario: str) -> Path:
    path = notebooks_dir() / f"{scenario}.ipynb"
    if not path.exists():
        known = sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
        raise ParameterError(
            f"no scenario {scenario!r} (known: {', '.join(known)})", key="scenario"
        )
    return path


def declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The notebook's parameters cell, as papermill reads it."""
    import papermill

    return papermill.inspect_notebook(str(path))


def validate_parameters(scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown names and secret values before anything runs."""
    declared = declared_parameters(notebook_path(scenario))
    for name in params:
        if not name.isidentifier():
            raise ParameterError(f"parameter name {name!r} is not a Python identifier", key=name)
        if name not in declared:
            raise ParameterError(
                f"{scenario} has no parameter {name!r}; it declares: {', '.join(declared)}",
                key=name,
            )
    env = str(params.get("env", declared.get("env", {}).get("default", "'sandbox'")).strip("'\""))
    profile = load_profile(env)
    store = SecretStore(Redactor(), profile.secrets.file, source=profile.source)
    for name, value in params.items():
        if isinstance(value, str) and value and value in store.known_values():
            raise ParameterError(
                f"parameter {name!r} holds a secret value: secrets are never parameters "
                "(papermill stores parameters in the output notebook). Use the secrets file.",
                key=name,
            )
    return params


def parse_value(text: str) -> Any:
    """`-p` values as papermill's CLI reads them: int, float, bool, None, else str."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class _Interrupted(Exception):
    pass


def run(
    scenario: str,
    params: dict[str, Any],
    *,
    timeout: float | None = None,
    quiet: bool = False,
) -> tuple[int, Path]:
    """Run one scenario; returns (exit code, run folder)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = validate_parameters(scenario, params)
    env = str(params.get("env", "sandbox"))
    run_dir = new_run_dir(env, scenario)
    output = run_dir / f"{scenario}.ipynb"
    os.environ["RUNBOOK_RUN_DIR"] = str(run_dir)
    started = utc_now()
    t0 = time.monotonic()
    outcome, error = "ok", None

    def _on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        papermill.execute_notebook(
            str(notebook_path(scenario)),
            str(output),
            parameters=params,
            kernel_name=KERNEL_NAME,
            cwd=str(notebooks_dir()),
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
            execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        outcome = _BY_ERROR.get(exc.ename, "failed")
        error = {"type": exc.ename, "message": str(exc.evalue)[:2000]}
    except KeyboardInterrupt as exc:
        outcome, error = "interrupted", {"type": "KeyboardInterrupt", "message": str(exc)}
    except Exception as exc:
        name = type(exc).__name__
        outcome = (
            "kernel_died"
            if "DeadKernel" in name
            else ("timed_out" if "Timeout" in name else "failed")
        )
        error = {"type": name, "message": str(exc)[:2000]}
    finally:
        signal.signal(signal.SIGTERM, old)
        os.environ.pop("RUNBOOK_RUN_DIR", None)
    code = finalize_record(
        run_dir, scenario, env, params, outcome, error, started, time.monotonic() - t0, output
    )
    if not quiet:
        print(f"outcome:   {_record(run_dir).get('outcome')} (exit {code})")
        print(f"notebook:  {output}")
        print(f"record:    {run_dir / 'record.json'}")
    return code, run_dir


def _record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "record.json"
    return json.loads(path.read_text()) if path.exists() else {}


def finalize_record(
    run_dir: Path,
    scenario: str,
    env: str,
    params: dict[str, Any],
    outcome: str,
    error: dict[str, str] | None,
    started: Any,
    duration: float,
    notebook: Path,
) -> int:
    """Make record.json tell the true outcome, whatever the kernel managed to write."""
    record = _record(run_dir)
    if not record:
        # the kernel never got as far as opening a session
        record = {
            "schema": RECORD_SCHEMA,
            "scenario": scenario,
            "environment": env,
            "parameters": params,
            "started": iso(started),
            "steps": [],
            "checks": [],
            "changes": [],
            "would_change": [],
        }
    session_outcome = record.get("outcome")
    if outcome == "ok" and session_outcome not in (None, "ok", "running"):
        outcome = session_outcome
    elif outcome == "failed" and session_outcome in EXIT and session_outcome != "running":
        # the session knew better what kind of failure it was
        outcome = session_outcome if session_outcome != "ok" else outcome
    elif outcome == "ok" and session_outcome == "running":
        # the notebook finished without calling session.done(): not a verdict
        outcome = "failed"
        error = {"type": "NoVerdict", "message": "the notebook ended without session.done()"}
    record["outcome"] = outcome
    if error and not record.get("error"):
        record["error"] = error
    record["exit_code"] = EXIT.get(outcome, 1)
    record["finished"] = iso(utc_now())
    record["runner"] = {
        "notebook": notebook.name,
        "kernel": KERNEL_NAME,
        "duration_s": round(duration, 3),
        "python": sys.version.split()[0],
    }
    # redact once more: nothing unredacted reaches the disk
    Evidence(run_dir, Redactor()).write_record(record)
    return record["exit_code"]
