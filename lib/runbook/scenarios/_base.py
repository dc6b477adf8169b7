"""What every scenario shares: the `Scenario` base class and `open_scenario`.

A scenario is a class with one method per runbook step, in the module named
after its notebook (`notebooks/restore_drill.ipynb` -> `runbook.scenarios.
restore_drill.RestoreDrill`). A notebook's first code cell is one line::

    s, drill = open_scenario("restore_drill")

`open_scenario` reads the names the notebook declares in its tagged
`parameters` cell, takes their values from the kernel's globals (where
papermill's injected cell has already overridden them), opens the session
with the session's own keywords (env, dry_run, confirm, approved_by,
break_stale_lock), records every declared parameter, and builds the scenario
class with the rest. So each parameter is written once, in the parameters
cell. A parameter papermill passes that the notebook does not declare is
refused by the session, as before.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from runbook.core.catalog import notebook_path, parameter_names
from runbook.errors import ParameterError
from runbook.evidence.resume import StepRules
from runbook.evidence.story import Summary
from runbook.ops.armor import MISSING, NOT_AVAILABLE, Piece, record_pieces
from runbook.session import Session

# the session's own keywords; every other parameter belongs to the scenario class
SESSION_KEYWORDS = ("env", "dry_run", "confirm", "approved_by", "break_stale_lock")


class Scenario:
    """A notebook's procedure: one method per runbook step; checks land in the session.

    Subclasses take the session and, as keywords, the notebook's parameters
    that are not the session's (see `open_scenario`).
    """

    #: a procedure that lifts a rule for this scenario only (runbook.safety.guards)
    procedure: ClassVar[str | None] = None
    #: secrets checked before the first change, beyond what the notebook declares
    require_secrets: ClassVar[tuple[str, ...]] = ()

    #: resume (runbook.evidence.resume): steps not safe to repeat; a resume never runs them again
    resume_once: ClassVar[tuple[str, ...]] = ()
    #: read-only steps a resume runs again although the parent completed them
    resume_reruns: ClassVar[tuple[str, ...]] = ()
    #: step -> name of a method returning (its effect is already there, what was found)
    resume_postconditions: ClassVar[dict[str, str]] = {}
    #: what the completed steps rely on (runbook.evidence.resume.FACTS), compared before a resume
    resume_relies_on: ClassVar[tuple[str, ...]] = ()
    #: True once the four above are declared: a resume of any other scenario is refused
    resumable: ClassVar[bool] = False

    def __init__(self, s: Session):
        self.s = s

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # every public method: a resume may skip it whole (see `resumable`)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, resumable(value))

    @classmethod
    def resume_rules(cls) -> StepRules:
        """What this scenario declares about its steps for a resume."""
        reruns = cls.resume_reruns + ((cls.lock_step,) if cls.lock_step else ())
        return StepRules(
            once=cls.resume_once,
            reruns=reruns,
            postconditions=dict(cls.resume_postconditions),
            relies_on=cls.resume_relies_on,
            resumable=cls.resumable,
        )

    #: the step of its own the host lock is taken in by `take_lock()` (None: no step)
    lock_step: ClassVar[str | None] = None
    #: skip that step when the lock is already held (a scenario that may ask twice)
    lock_once: ClassVar[bool] = False

    def change_summary(self) -> Sequence[str]:
        """What this run is about to change, one short line each, for the confirmation question.

        Asked once, before the first change (off the sandbox); read-only calls
        may be used to fill it in (the SHA to deploy, the pending migrations).
        [] when the scenario has nothing to say: the question names the first change.
        """
        return []

    def no_lock_needed(self) -> str | None:
        """Why this run needs no lock now, or None: a scenario that decides first (a triage
        branch, a failover decision) takes it only when what it decided changes the server."""
        return None

    def take_lock(
        self, step: str | None = None, *, once: bool | None = None
    ) -> dict[str, Any] | None:
        """Take the host lock now, in a step of its own (`step`, else `lock_step`), unless
        `no_lock_needed()` says why not. Returns the lock's record entry.

        The one way a scenario takes the host lock: `Session.acquire_lock`. The
        session also takes it by itself before its first real change; a
        scenario takes it earlier so that a second changing run is refused
        before this one starts changing, and the timeline shows the step.
        `acquire_lock` is idempotent; `once=True` (default `lock_once`) skips
        the step too when the lock is already held (or a dry run already
        tried), for a branch that may ask twice.
        """
        why_not = self.no_lock_needed()
        if why_not:
            print(why_not)
            return None
        return self.hold_lock(step or self.lock_step, once=self.lock_once if once is None else once)

    def hold_lock(self, step: str | None = None, *, once: bool = False) -> Summary:
        """Take the host lock now, in `step` when named, whatever the decision said (a
        branch that finds it must change the server after all: a drain). Returns the
        lock's record entry; `once` as in `take_lock`."""
        s = self.s
        if once and s.lock is not None and (s.lock.held or s.dry_run):
            self.armor_preflight()
            return self._lock_summary()
        with s.step(step) if step else contextlib.nullcontext():
            s.acquire_lock()
        self.armor_preflight()
        return self._lock_summary()

    def _lock_summary(self) -> Summary:
        """The lock's record entry, shown as one line (not its command and owner dict)."""
        s = self.s
        assert s.lock is not None
        info = s.lock.info()
        if s.dry_run:
            line = f"dry run: no host lock taken ({info['path']})"
        else:
            line = f"host lock taken: {info['path']} (run {info['owner']['run_id'][:8]})"
        if info.get("broken"):
            line += "; broke a stale lock (recorded)"
        return Summary(line, **info)

    def armor_preflight(self) -> list[Piece]:
        """Install the server's armor and verify it, in a step of its own; once per run.

        Every changing scenario runs it before its first change (through
        `take_lock`, or from its own preflight). Each piece is a check: holding
        passes, missing fails, and a piece the platform does not allow (no
        immutable attribute on this filesystem) is "not available", never passed.
        """
        s = self.s
        if any(st.name == ARMOR_STEP for st in s.steps):
            return s.armor.pieces
        with s.step(ARMOR_STEP):
            pieces = s.armor.install()
            if s.dry_run:
                pieces = [
                    p
                    if p.status != MISSING
                    else Piece(p.name, NOT_AVAILABLE, f"dry run: would install ({p.detail})")
                    for p in pieces
                ]
            record_pieces(s, pieces)
            for p in pieces:
                print(f"armor: {p.name}: {p.status} ({p.detail})")
        return pieces


#: the preflight step that installs and verifies the server's armor (runbook.ops.armor)
ARMOR_STEP = "Preflight: armor on the server"


def resumable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a scenario method: its steps name it, and a resume may skip it.

    Papermill runs every cell, and a `with s.step(...)` block cannot skip its
    own body, so the seam is the scenario method (one notebook cell): when a
    resume's plan says every step the method opened in the parent is done
    (and not re-run), the method returns None at once and its steps are
    recorded "skipped: done in run X". Nested calls (a method calling another)
    run as they are: only the outermost method is the unit.
    """
    if getattr(fn, "_resumable", False):
        return fn

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
        s = getattr(self, "s", None)
        if s is None or getattr(s, "method", None) is not None:
            return fn(self, *args, **kw)
        name = fn.__name__
        plan = getattr(s, "resume", None)
        if plan is not None:
            check = None
            target = self.resume_postconditions.get(plan.failed_step or "")
            if target and plan.failed_step in plan.methods.get(name, []):
                check = getattr(self, target)
            if s.resume_skip(name, check):
                return None
        s.method = name
        try:
            return fn(self, *args, **kw)
        finally:
            s.method = None

    wrapper._resumable = True  # type: ignore[attr-defined]
    return wrapper


Scenario.take_lock = resumable(Scenario.take_lock)  # type: ignore[method-assign]


def open_scenario(
    name: str, *, namespace: dict[str, Any] | None = None
) -> tuple[Session, Scenario]:
    """Open the session of notebook `name` and build its scenario from the parameters cell.

    `namespace` is where the parameters' values are read (default: the
    caller's globals, i.e. the kernel's). Returns `(session, scenario)`.

    Example (a notebook's first code cell)::

        s, drill = open_scenario("restore_drill")
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals
    declared = parameter_names(notebook_path(name))
    missing = [n for n in declared if n not in namespace]
    if missing:
        raise ParameterError(
            f"{name}: the parameters cell declares {', '.join(missing)} but they are not set "
            "here: run the parameters cell first (Run > Run All Cells).",
            key=missing[0],
        )
    values = {n: namespace[n] for n in declared}
    cls = scenario_class(name)
    session_kw = {k: values[k] for k in SESSION_KEYWORDS if k in values}
    scenario_kw = {k: v for k, v in values.items() if k not in SESSION_KEYWORDS}
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in scenario_kw if k not in accepted]
    if unknown:
        raise ParameterError(
            f"{name}: {cls.__name__} takes no parameter {', '.join(unknown)}; the notebook's "
            f"parameters cell and {cls.__module__} disagree (add it to {cls.__name__}.__init__).",
            key=unknown[0],
        )
    s = Session(
        name,
        **session_kw,
        parameters=values,
        procedure=cls.procedure,
        require_secrets=cls.require_secrets,
    )
    # runs on this machine that died without a verdict: finished and sealed, a step of
    # its own whose result (failures too) is in this run's evidence and record
    s.finish_abandoned_runs()
    # a resume (RUNBOOK_RESUME_FROM) is planned, or refused, before the first step
    s.begin_resume(cls.resume_rules())
    scenario = cls(s, **scenario_kw)
    # the confirmation question asks about what this run will change (safety/change.py)
    s.change_check.summarize = scenario.change_summary
    return s, scenario


def scenario_class(name: str) -> type[Scenario]:
    """The one `Scenario` class of `runbook.scenarios.<name>`.

    >>> scenario_class("restore_drill").__name__
    'RestoreDrill'
    """
    try:
        module = importlib.import_module(f"runbook.scenarios.{name}")
    except ModuleNotFoundError:
        raise ParameterError(
            f"no scenario module runbook.scenarios.{name}", key="scenario"
        ) from None
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Scenario)
        and obj is not Scenario
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ParameterError(
            f"runbook.scenarios.{name} must define exactly one Scenario class "
            f"(found {', '.join(c.__name__ for c in found) or 'none'})",
            key="scenario",
        )
    return found[0]


def show(obj: Any) -> None:
    """Display in a kernel (tables, figures); print elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
            return
    except ImportError:
        pass
    print(obj)


def in_kernel() -> bool:
    """True inside an IPython kernel (JupyterLab or papermill)."""
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def in_jupyterlab() -> bool:
    """True in a kernel started by Jupyter's server (not papermill, not cron)."""
    return bool(os.environ.get("JPY_SESSION_NAME")) and not os.environ.get("RUNBOOK_RUN_DIR")
