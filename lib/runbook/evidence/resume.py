"""Resuming a failed run: the plan, and every reason to refuse one before anything runs.

A resume is a new run of the same notebook with the parent's parameters, in
its own evidence folder. It re-runs the setup (imports, parameters, the
session, read-only steps a scenario lists in `resume_reruns`, the host
lock), skips the steps the parent completed (recorded "skipped: done in run
X") and continues from the failed step. Papermill runs every cell, so the
skipping happens in the library: a scenario method whose steps were all done
in the parent returns at once (runbook.scenarios._base wraps every method).

The link is written in the new run only (`resume.from` in its record): the
parent's folder is sealed (MANIFEST.sha256, evidence/seal.py) and stays as it
was; `runbook history` derives `resumed_by` from the children.

Refused before anything runs (`refusal`: a `Forbidden`, exit 4; a bad RUN or override is
a `ParameterError`, exit 2) when:

- the parent's outcome is ok, refused, parameters or abandoned, or it was a
  dry run; an interrupted run only with `allow_interrupted` (recorded);
- a code cell up to the failed one changed since the parent ran (sources
  hashed; later cells may change, and that is recorded);
- the parameters differ from the parent's (an override must be named);
- a step the parent completed must run again and is not safe to repeat, or
  the failed step is not safe to repeat and declares no postcondition;
- (in the kernel, `Resume.check_facts`) the target moved since the parent
  stopped: what the scenario's completed steps rely on (`resume_relies_on`).

Example::

    >>> rules = StepRules(once=("3. Snapshot",), reruns=("1. CI",))
    >>> rules.repeatable("3. Snapshot"), rules.repeatable("4. Pull")
    (False, True)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.core.paths import outputs_dir
from runbook.errors import Forbidden, ParameterError

#: the run folder of the parent, for the kernel (set by `runbook resume`, or by hand
#: in JupyterLab with `%env RUNBOOK_RESUME_FROM=<run folder>` before the first cell)
RESUME_ENV = "RUNBOOK_RESUME_FROM"
#: what the operator allowed, as JSON: {"allow_interrupted": bool, "overrides": [...],
#: "accept_moved": [...]}
RESUME_FLAGS_ENV = "RUNBOOK_RESUME_FLAGS"

#: outcomes a resume refuses, and why
NOT_RESUMABLE = {
    "ok": "it succeeded: there is nothing to resume",
    "refused": "a runbook rule refused it: fix the cause and start a new run",
    "parameters": "its parameters were wrong: start a new run with the right ones",
    "abandoned": "its process died without a verdict: what it did is unknown; start a new run",
    "running": "it is still running (or died without a verdict: `runbook history` marks it)",
}
#: session-only parameters that may differ in a resume (the confirmation is asked again)
FREE_PARAMETERS = ("confirm", "break_stale_lock", "approved_by")
#: what a scenario's completed steps may rely on, and how the kernel reads it
FACTS = ("app_head", "alembic_revision")


def refusal(reason: str, fix: str) -> Forbidden:
    """The refusal of a resume: rule "resume-safely", with the reason and the fix (exit 4).

    >>> refusal("run x ended ok", "start a new run").details()["fix"]
    'start a new run'
    """
    return Forbidden(
        "resume-safely",
        "resume this run",
        why=f"{reason}. Fix: {fix}",
        extra={"reason": reason, "fix": fix},
    )


@dataclass(frozen=True)
class StepRules:
    """What a scenario declares about its steps for a resume (class attributes of `Scenario`).

    `once`: steps not safe to repeat (a snapshot, a rotation, a rename, an
    announcement); a resume never runs them again. `reruns`: read-only steps
    a resume runs again although the parent completed them (they set what
    later steps read). `postconditions`: step -> the scenario method that says
    whether the step's effect already happened. `relies_on`: FACTS.
    """

    once: tuple[str, ...] = ()
    reruns: tuple[str, ...] = ()
    postconditions: dict[str, str] = field(default_factory=dict)
    relies_on: tuple[str, ...] = ()
    #: False until the scenario has declared which of its steps are safe to repeat
    resumable: bool = True

    def repeatable(self, step: str) -> bool:
        return step not in self.once


def parameters_hash(params: dict[str, Any]) -> str:
    """SHA-256 of the parameters (as the record holds them: secret-free), session-only ones out.

    >>> parameters_hash({"env": "sandbox", "confirm": "x"}) == parameters_hash({"env": "sandbox"})
    True
    """
    kept = {k: v for k, v in params.items() if k not in FREE_PARAMETERS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """The notebook's code cells, papermill's injected-parameters cell left out."""
    return [
        c
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
        and "injected-parameters" not in (c.get("metadata", {}).get("tags") or [])
    ]


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def cell_hashes(nb: dict[str, Any]) -> list[str]:
    """SHA-256 of each code cell's source (injected parameters out), in order."""
    return [hashlib.sha256(_source(c).encode()).hexdigest() for c in code_cells(nb)]


def stopped_cell(nb: dict[str, Any]) -> int:
    """Index (among `code_cells`) of the first cell papermill did not complete, else the count."""
    cells = code_cells(nb)
    for i, c in enumerate(cells):
        if (c.get("metadata", {}).get("papermill") or {}).get("status") != "completed":
            return i
    return len(cells)


def find_run(run: str, root: Path | None = None) -> Path:
    """A run folder from a path or a run id (the folder's name under outputs/<env>/<scenario>/)."""
    path = Path(run).expanduser()
    if (path / "record.json").exists():
        return path.resolve()
    root = root or outputs_dir()
    found = sorted(root.glob(f"*/*/{run}/record.json")) if "/" not in run else []
    if len(found) == 1:
        return found[0].parent
    if len(found) > 1:
        raise ParameterError(
            f"run id {run} names {len(found)} folders: give the run folder's path", key="run"
        )
    raise ParameterError(
        f"no run {run!r}: give a run folder (with a record.json) or a run id under {root} "
        "(`runbook history` lists them)",
        key="run",
    )


def read_record(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run_dir / "record.json").read_text()))
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{run_dir}: record.json unreadable ({exc})", key="run") from None


@dataclass
class Plan:
    """What a resume of `parent` will do: which scenario methods it skips, which step it resumes."""

    parent: Path
    record: dict[str, Any]
    #: completed steps, in the parent's order
    done: list[str]
    failed_step: str | None
    #: scenario method -> the parent's steps it opened
    methods: dict[str, list[str]]
    #: methods whose every step is done and not re-run: skipped
    skip_methods: list[str]
    later_cells_changed: list[int]
    allow_interrupted: bool = False
    overrides: list[str] = field(default_factory=list)
    accept_moved: list[str] = field(default_factory=list)

    @property
    def parent_id(self) -> str:
        return self.parent.name

    def to_record(self) -> dict[str, Any]:
        """The new run's `resume` entry in record.json."""
        return {
            "from": self.parent_id,
            "from_dir": str(self.parent),
            "parent_outcome": self.record.get("outcome"),
            "failed_step": self.failed_step,
            "skipped_steps": [s for m in self.skip_methods for s in self.methods[m]],
            "later_cells_changed": self.later_cells_changed,
            "allow_interrupted": self.allow_interrupted,
            "overrides": self.overrides,
            "accept_moved": self.accept_moved,
        }


def _parent_notebook(parent: Path, record: dict[str, Any]) -> Path:
    name = (record.get("runner") or {}).get("notebook") or f"{record.get('scenario')}.ipynb"
    path = parent / str(name)
    if not path.exists():
        raise refusal(
            f"the parent's executed notebook {path.name} is not in {parent}",
            "start a new run: without it the resume cannot tell what the parent ran",
        )
    return path


def plan(
    parent: Path,
    notebook: Path,
    rules: StepRules,
    *,
    params: dict[str, Any] | None = None,
    allow_interrupted: bool = False,
    overrides: tuple[str, ...] | list[str] = (),
    accept_moved: tuple[str, ...] | list[str] = (),
) -> Plan:
    """Check that `parent` may be resumed with `notebook` and `params`; say what the resume does.

    `params` are the resume's parameters (default: the parent's). Raises
    `Forbidden` from `refusal` (exit 4) or `ParameterError` (exit 2) naming the fix.
    """
    record = read_record(parent)
    rid = parent.name
    if not rules.resumable:
        raise refusal(
            f"{record.get('scenario')} has not declared which of its steps are safe to repeat "
            "(Scenario.resume_once and friends), so no resume can be trusted with it",
            f"finish run {rid}'s remaining steps by hand, or start a new run",
        )
    outcome = str(record.get("outcome"))
    if outcome in NOT_RESUMABLE:
        raise refusal(
            f"run {rid} ended {outcome}: {NOT_RESUMABLE[outcome]}",
            f"`runbook run {record.get('scenario')}` starts a new run",
        )
    if outcome == "interrupted" and not allow_interrupted:
        raise refusal(
            f"run {rid} was interrupted by the operator",
            "resume it only if stopping it was not a decision: add --allow-interrupted (recorded)",
        )
    if record.get("dry_run"):
        raise refusal(f"run {rid} was a dry run", "start a real run: a dry run changed nothing")
    steps = list(record.get("steps") or [])
    if steps and not any("method" in st for st in steps):
        raise refusal(
            f"run {rid} predates resumable records (its steps name no scenario method)",
            "start a new run",
        )
    # the resume's parameters: the parent's, with named overrides only
    parent_params = dict(record.get("parameters") or {})
    given = dict(parent_params if params is None else params)
    differ = sorted(
        k
        for k in set(given) | set(parent_params)
        if k not in FREE_PARAMETERS and given.get(k) != parent_params.get(k)
    )
    unnamed = [k for k in differ if k not in overrides]
    if unnamed:
        raise ParameterError(
            f"the parameters differ from run {rid}'s: {', '.join(unnamed)} "
            f"({', '.join(f'{k}={parent_params.get(k)!r} -> {given.get(k)!r}' for k in unnamed)})",
            key=unnamed[0],
        )
    bad = [k for k in overrides if k not in differ]
    if bad:
        raise ParameterError(
            f"--override {bad[0]}: that parameter does not differ from run {rid}'s", key=bad[0]
        )
    recorded = record.get("parameters_sha256")
    if recorded and not differ and recorded != parameters_hash(given):
        raise refusal(
            f"run {rid}'s parameters do not match the hash its record holds",
            "the record was edited: check `runbook verify` on it and start a new run",
        )
    # the cells up to the one the parent stopped in must be the ones it ran
    ran = json.loads(_parent_notebook(parent, record).read_text())
    now = json.loads(notebook.read_text())
    stop = stopped_cell(ran)
    before, after = cell_hashes(ran), cell_hashes(now)
    upto = min(stop + 1, len(before))
    changed = [i for i in range(upto) if i >= len(after) or after[i] != before[i]]
    if changed:
        raise refusal(
            f"the notebook's code cell(s) {', '.join(str(i + 1) for i in changed)} changed "
            f"since run {rid} ran them (up to the cell it stopped in, {stop + 1})",
            "a resume continues the same procedure: start a new run, or put the cells back",
        )
    later = [
        i
        for i in range(upto, max(len(before), len(after)))
        if i >= len(before) or i >= len(after) or before[i] != after[i]
    ]
    # which steps were done, and what a resume does with each scenario method
    done = [str(st["name"]) for st in steps if st.get("status") in ("ok", "skipped")]
    failed = record.get("failed_step")
    if failed is None:
        # a run that failed checks and not a step: the first step with a failed check
        bad_checks = [c for c in record.get("checks") or [] if c.get("status") == "failed"]
        failed = bad_checks[0].get("step") if bad_checks else None
    if failed in done:
        done.remove(str(failed))
    methods: dict[str, list[str]] = {}
    for st in steps:
        methods.setdefault(str(st.get("method")), []).append(str(st["name"]))
    skip: list[str] = []
    for method, names in methods.items():
        if method == "None":
            continue
        runs_again = [n for n in names if n not in done or n in rules.reruns]
        if not runs_again:
            skip.append(method)
            continue
        once_done = [n for n in names if n in done and not rules.repeatable(n)]
        if once_done:
            raise refusal(
                f"step {once_done[0]!r} (done in run {rid}) is not safe to repeat, and "
                f"{method}() must run again for {runs_again[0]!r}",
                "finish the remaining steps by hand, recorded in a postmortem",
            )
    if failed and not rules.repeatable(str(failed)) and failed not in rules.postconditions:
        raise refusal(
            f"the failed step {failed!r} is not safe to repeat and cannot tell whether its "
            "effect already happened",
            "check the target by hand and finish the run's remaining steps by hand",
        )
    return Plan(
        parent=parent,
        record=record,
        done=done,
        failed_step=str(failed) if failed else None,
        methods={k: v for k, v in methods.items() if k != "None"},
        skip_methods=skip,
        later_cells_changed=later,
        allow_interrupted=allow_interrupted,
        overrides=list(overrides),
        accept_moved=list(accept_moved),
    )


def moved_facts(
    parent: dict[str, Any], now: dict[str, Any], relies_on: tuple[str, ...], accept: list[str]
) -> list[str]:
    """The facts the completed steps rely on that moved (or cannot be told), not accepted.

    >>> moved_facts({"app_head": "a"}, {"app_head": "b"}, ("app_head",), [])
    ["app_head: 'a' when the parent stopped, 'b' now"]
    >>> moved_facts({"app_head": "a"}, {"app_head": "b"}, ("app_head",), ["app_head"])
    []
    """
    out = []
    for name in relies_on:
        if name in accept:
            continue
        before, after = parent.get(name), now.get(name)
        if before is None or after is None or before != after:
            out.append(f"{name}: {before!r} when the parent stopped, {after!r} now")
    return out


def flags_from_env(text: str | None) -> dict[str, Any]:
    """The operator's resume flags (RESUME_FLAGS_ENV), empty when unset."""
    if not text:
        return {}
    data = json.loads(text)
    return data if isinstance(data, dict) else {}
