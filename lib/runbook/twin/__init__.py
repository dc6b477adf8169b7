"""The production twin: production.yaml, unchanged but for its address, against a
systemd-booted Debian 12 server (systemd-nspawn) and an "internet" container.

`runbook twin up | down | status | fault NAME | heal | exec -- CMD` (lib/runbook/twin/cli.py).
"""

from runbook.twin.common import TwinError
from runbook.twin.instance import Twin, twin_state_dir

__all__ = ["Twin", "TwinError", "twin_state_dir"]
