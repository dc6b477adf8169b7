"""Progress of a wait: one line, updated in place in JupyterLab, a line per poll elsewhere.

The capture of a command's output (what the session's gate records) lives
in runbook.session.capture.
"""

from __future__ import annotations

from typing import Any


class Progress:
    """One line of progress for a wait: updated in place in JupyterLab, a line per poll elsewhere.

    In a kernel a person watches (JupyterLab), one display is updated on
    every poll; headless (papermill, `runbook run`, a script) each poll prints
    its own line, so the log shows the wait as it went. Waits shorter than
    `quiet_s` say nothing (most waits end on the first poll).

        >>> p = Progress("deep health", seconds=20)
        >>> p.say("postgres red", waited=6.2)
        deep health: postgres red (6 s of 20 s)
        >>> p.lines
        1
    """

    def __init__(self, title: str, *, seconds: float | None = None, quiet_s: float = 3.0):
        self.title = title
        self.seconds = seconds
        self.quiet_s = quiet_s
        self.lines = 0
        self._handle: Any = None

    def say(self, text: str, *, waited: float | None = None, final: bool = False) -> None:
        """Show `text` (with the time waited, when given); `final` always shows."""
        if not final and waited is not None and waited < self.quiet_s:
            return
        of = f" of {self.seconds:.0f} s" if self.seconds is not None else ""
        when = f" ({waited:.0f} s{of})" if waited is not None else ""
        line = f"{self.title}: {text}{when}"
        self.lines += 1
        if not live_kernel():
            print(line, flush=True)
            return
        from IPython.display import display

        shown = {"text/plain": line}
        if self._handle is None:
            self._handle = display(shown, raw=True, display_id=True)
        else:
            self._handle.update(shown, raw=True)

    def poll(self, ok: bool, waited: float) -> None:
        """`wait_for`'s `on_poll`: "green"/"not yet" per poll."""
        self.say("ok" if ok else "not yet", waited=waited, final=ok and self.lines > 0)


def live_kernel() -> bool:
    """True in a kernel started by Jupyter's server for a person (JupyterLab), not
    under papermill or `runbook run` (RUNBOOK_RUN_DIR), where outputs are read afterwards."""
    import os
    import sys

    if os.environ.get("RUNBOOK_RUN_DIR") or not os.environ.get("JPY_SESSION_NAME"):
        return False
    mod = sys.modules.get("IPython")
    return bool(mod is not None and mod.get_ipython() is not None)
