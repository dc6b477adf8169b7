"""Redis: its config (a queue and cache that starts empty).

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> lay = Layout(Path(tempfile.mkdtemp()))
    >>> write_redis_config({"redis_port": 6390}, lay)
    >>> "port 6390" in lay.redis_conf.read_text()
    True
"""

from __future__ import annotations

from typing import Any

from runbook.sandbox.layout import Layout


def write_redis_config(state: dict[str, Any], lay: Layout) -> None:
    lay.redis_conf.parent.mkdir(parents=True, exist_ok=True)
    lay.redis_data.mkdir(parents=True, exist_ok=True)
    (lay.log_dir / "redis").mkdir(parents=True, exist_ok=True)
    lay.redis_conf.write_text(f"""\
# Written by `runbook sandbox`; rewritten at every `up`.
bind 127.0.0.1
port {state["redis_port"]}
protected-mode yes
daemonize no
supervised no
# A queue/cache that starts empty: no RDB snapshots, no AOF.
save ""
appendonly no
dir {lay.redis_data}
logfile {lay.log_dir / "redis" / "redis-server.log"}
""")
