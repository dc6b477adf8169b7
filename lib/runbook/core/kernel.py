"""The notebook kernel, when there is one: the shell, and which notebook and kernel it is.

Everything here does nothing outside IPython. What the session does with the
kernel (its error hook, its output redaction, the verdict display) is in
runbook.session.notebook.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any


def ipython() -> Any:
    """The running IPython shell, or None (IPython not imported, or no shell)."""
    mod = sys.modules.get("IPython")
    if mod is None:
        return None
    try:
        return mod.get_ipython()
    except Exception:
        return None


def kernel_identity() -> dict[str, str] | None:
    """The notebook and Jupyter kernel id this code runs in, when a Jupyter server started it.

    The host lock's owner record holds it, so that a run refused by a lock
    held by a kernel left open (a tab mid-notebook) is told which notebook and
    kernel to shut down. None outside a kernel (a script, `runbook run`'s
    papermill kernel names no notebook of a person).

    >>> kernel_identity() is None  # not in a kernel here
    True
    """
    import os

    ip = ipython()
    if ip is None:
        return None
    kernel_id = ""
    with contextlib.suppress(Exception):
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).stem  # kernel-<id>
        kernel_id = name[len("kernel-") :] if name.startswith("kernel-") else name
    notebook = os.environ.get("JPY_SESSION_NAME", "")
    if not kernel_id and not notebook:
        return None
    return {"id": kernel_id, "notebook": notebook}
