"""The log parsers of runbook.ops.logs on crafted lines, as the servers write them."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from runbook.core.profile import Security
from runbook.ops import logs

# Debian 12 rsyslog (ISO), traditional syslog (no year) and sshd -E (no time at all)
AUTH = (
    "2026-11-27T07:41:02.5+01:00 dealix sshd[7]: Failed password for invalid user admin "
    "from 203.0.113.66 port 51234 ssh2\n"
    "Nov  3 07:43:10 dealix sshd[9]: Accepted publickey for deploy from 198.51.100.7 "
    "port 51302 ssh2: ED25519 SHA256:abc\n"
    "Failed none for  from 203.0.113.66 port 1 ssh2\n"
    "Nov 27 07:44:00 dealix sshd[9]: pam_unix(sshd:session): session opened for user deploy\n"
)


def test_auth_log_rows_times_and_users() -> None:
    df = logs.parse_auth_log(AUTH, year=2025)
    assert list(df.columns) == ["time", "address", "user", "result", "method"]
    assert list(df["result"]) == ["failed", "accepted", "failed"]
    assert list(df["user"]) == ["admin", "deploy", "(empty)"]
    assert list(df["method"]) == ["password", "publickey", "none"]
    # the ISO offset is turned into UTC; syslog takes the year it is given
    assert df["time"][0] == pd.Timestamp(datetime(2026, 11, 27, 6, 41, 2, 500000, tzinfo=UTC))
    assert df["time"][1] == pd.Timestamp(datetime(2025, 11, 3, 7, 43, 10, tzinfo=UTC))
    assert pd.isna(df["time"][2])


def test_empty_logs_give_empty_tables_with_their_columns() -> None:
    assert logs.parse_auth_log("", year=2026).empty
    access = logs.parse_access_log("not a request\n")
    assert access.empty and list(access.columns) == [
        "time",
        "address",
        "method",
        "path",
        "status",
        "key",
    ]


def test_access_log_reads_the_apps_lines_and_nginx_combined() -> None:
    text = (
        "2026-11-27T08:02:11+0000 INFO dealix.access 203.0.113.66 "
        '"POST /api/v1/admin/dlq/webhooks/drain?limit=100" 401 0.9ms key=invalid\n'
        '198.51.100.7 - - [27/Nov/2026:09:15:00 +0100] "GET /api/v1/admin/dlq/stats?x=1 HTTP/1.1" '
        '200 52 "-" "curl/8.0"\n'
    )
    df = logs.parse_access_log(text)
    assert list(df["address"]) == ["203.0.113.66", "198.51.100.7"]
    assert list(df["path"]) == ["/api/v1/admin/dlq/webhooks/drain", "/api/v1/admin/dlq/stats"]
    assert list(df["status"]) == [401, 200]
    assert df["key"][0] == "invalid" and pd.isna(df["key"][1])  # nginx cannot tell
    assert df["time"][1] == pd.Timestamp(datetime(2026, 11, 27, 8, 15, tzinfo=UTC))


def test_recent_errors_only_since_the_last_start() -> None:
    text = (
        "PANIC:  could not locate a valid checkpoint record\n"
        "LOG:  database system is ready to accept connections\n"
        "LOG:  checkpoint starting\n"
        'ERROR:  relation "x" does not exist\n'
    )
    assert logs.recent_errors(text) == 'ERROR:  relation "x" does not exist'
    # never came up: every severe line counts
    assert logs.recent_errors("FATAL:  a\nLOG:  b\nPANIC:  c\n") == "FATAL:  a\nPANIC:  c"


def test_last_lines_and_preserved_paths() -> None:
    assert logs.last_lines("\n a\nb\nc\n\n", 2) == ["b", "c"]
    assert logs.last_lines("a\nb\n", 0) == []
    words = logs.preserved_paths(
        Security(
            nginx_logs="/var/log/nginx", auth_log="/var/log/auth.log", app_logs=["/l/a[12].log"]
        )
    )
    assert words == "/var/log/nginx /var/log/auth.log /l/a[12].log"
