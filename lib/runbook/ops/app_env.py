"""The app's `.env` on the server, read with its secret values hidden first.

The session already learns the server's secrets when it connects and after
each change (runbook.core.server_secrets); a reader that is about to hand the
values to a step registers them once more itself, so nothing it returns can
be printed raw even if that learning missed a key (a rotation just wrote it).

Example (in a notebook)::

    values = read(s)          # {"ADMIN_KEY": "...", ...}: every secret-named value masked
    sorted(values)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from runbook.core.secrets import parse_env_text

if TYPE_CHECKING:
    from runbook.core.context import OpsContext

# values of keys named like these are registered with the redactor the moment they are read
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|DSN|DATABASE_URL|REDIS_URL", re.I)


def read(ctx: OpsContext) -> dict[str, str]:
    """The server's `.env` (`app.env_file`) as names and values, secrets registered first."""
    text = ctx.read_file(ctx.profile.app.env_file).decode("utf-8", "replace")
    values = parse_env_text(text)
    # Register before anything else touches the values: nothing can print them after this.
    for name, value in values.items():
        if SECRET_NAME.search(name) and len(value) >= 8:
            ctx.redactor.register(name, value)
    return values
