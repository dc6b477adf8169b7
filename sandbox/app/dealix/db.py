"""Postgres and Redis access.

Postgres: one short-lived connection per unit of work.

No pool on purpose: when Postgres is down every request fails fast with
OperationalError (the signal scenario 3 of the runbook looks for) and the API
recovers by itself the moment the database is back, with nothing stale kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_SECONDS = 2
# Bounds a request stuck behind a lock so it cannot hold a worker thread forever.
STATEMENT_TIMEOUT_MS = 10_000


def connect(database_url: str, *, autocommit: bool = True) -> psycopg.Connection[dict[str, Any]]:
    if not database_url:
        raise psycopg.OperationalError("DATABASE_URL is not set")
    return psycopg.connect(
        database_url,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        autocommit=autocommit,
        row_factory=dict_row,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        application_name="dealix-api",
    )


@contextmanager
def connection(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    conn = connect(database_url)
    try:
        yield conn
    finally:
        conn.close()


def jsonable(value: Any) -> Any:
    """Make a row value JSON-serialisable; datetimes become ISO 8601 in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def row_to_json(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: jsonable(v) for k, v in row.items()}


def error_text(exc: BaseException) -> str:
    """One line of error text; libpq messages span several lines."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def make_redis(redis_url: str) -> redis.Redis:
    # No retries: redis-py retries with backoff by default, which would turn a
    # dead Redis into multi-second stalls and could RPUSH a DLQ item twice.
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
