"""The sandbox: a disposable Dealix server built from real parts.

OpenSSH sshd, PostgreSQL 15, Redis, nginx, the stand-in Dealix API deployed
from a git origin, and one stub server for the SaaS we cannot reach, run by
supervisord from a state dir (see sandbox/README.md for the contract).

Example::

    >>> from runbook.sandbox import Sandbox
    >>> sb = Sandbox()                    # $RUNBOOK_SANDBOX_DIR or <project>/.sandbox
    >>> sb.kind                           # a rehearsal target (runbook.rehearsal)
    'sandbox'
"""

from runbook.rehearsal.faults.registry import FAULTS, Fault, UnknownFault, register
from runbook.sandbox.layout import Layout, default_state_dir, project_root
from runbook.sandbox.manager import Sandbox
from runbook.sandbox.procs import SandboxError

__all__ = [
    "FAULTS",
    "Fault",
    "Layout",
    "Sandbox",
    "SandboxError",
    "UnknownFault",
    "default_state_dir",
    "project_root",
    "register",
]
