"""Building the sandbox's parts, one module per component.

Each function does one part and is safe to call again: the one-off parts
(keys, cluster, origin, venv, app `.env`) are made once, configs are
rewritten from state.json at every non-trivial `up` so that a newer
version of this code takes effect without `--fresh`.

- `host`: who we are, the clean environment, local commands (`run`, `git`),
  private files, free ports
- `envfiles`: the operator's secrets and the KEY=VALUE files that hold them
- `ssh`: keys, known_hosts, sshd's config and its preconditions
- `postgres`: the binaries, initdb, the cluster's config, sockets, SCRAM
- `app`: the origin and its history, the clone, the venv, the app's `.env`
- `redis`, `nginx`: their configs
- `stubs`: the SaaS stubs' credentials and their program's command
- `supervisor`: the program sections, the network namespace, supervisord

Import from the component (`from runbook.sandbox.build.ssh import ...`).
"""

from __future__ import annotations

# The twin's instance (lib/runbook/twin/instance.py) reaches these through the
# package, the standard library's `secrets` included; new code imports the component.
import secrets

from runbook.sandbox.build.envfiles import generate_secrets, read_env_file, write_env_file
from runbook.sandbox.build.host import free_ports, write_private
from runbook.sandbox.build.stubs import stubs_config

__all__ = [
    "free_ports",
    "generate_secrets",
    "read_env_file",
    "secrets",
    "stubs_config",
    "write_env_file",
    "write_private",
]
