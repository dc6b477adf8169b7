"""Pure parts of scenarios 3 and 4 on crafted inputs: branch naming, rotation rules, decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from runbook.ops import logs
from runbook.scenarios import llm_provider_down as llm
from runbook.scenarios.database_down import rotation
from runbook.scenarios.database_down import signals as tr

HEALTHY = {
    "deep_status": "green",
    "deep_postgres": "green",
    "deep_postgres_detail": "SELECT 1 ok",
    "api_service": True,
    "postgres_service": "active (running)",
    "select1": True,
    "disk_data": 26.0,
    "disk_backups": 26.0,
    "connections": 3,
    "connections_max": 40,
    "connections_reserved": 3,
    "postgres_log": "LOG:  database system is ready to accept connections",
}


def branch(**changes):
    return tr.classify(tr.signal_table({**HEALTHY, **changes}))


def test_healthy_is_no_incident() -> None:
    assert branch().name == tr.NO_INCIDENT


def test_stopped_or_failed_service_is_service_failed() -> None:
    for words in ("inactive (dead)", "failed (failed)"):
        b = branch(
            postgres_service=words,
            select1=False,
            select1_error="No such file",
            deep_postgres="red",
            connections=None,
        )
        assert b.name == tr.SERVICE_FAILED and words in b.reason


def test_failed_service_with_corruption_in_log_is_corrupt() -> None:
    b = branch(
        postgres_service="failed (failed)",
        select1=False,
        postgres_log="PANIC:  could not locate a valid checkpoint record",
    )
    assert b.name == tr.CORRUPT and "checkpoint" in b.reason


def test_disk_full_wins_over_a_failed_service() -> None:
    b = branch(disk_backups=100.0, postgres_service="failed (failed)", select1=False)
    assert b.name == tr.DISK_FULL and "backups filesystem 100%" in b.reason
    assert branch(disk_data=95.0).name == tr.DISK_FULL
    assert branch(disk_data=94.9).name == tr.NO_INCIDENT


def test_pool_exhausted_from_counts_or_error_text() -> None:
    detail = "FATAL: remaining connection slots are reserved for non-replication superuser"
    assert (
        branch(deep_postgres="red", deep_postgres_detail=detail, connections=38).name
        == tr.POOL_EXHAUSTED
    )
    assert (
        branch(deep_postgres="red", deep_postgres_detail="timeout", connections=37).name
        == tr.POOL_EXHAUSTED
    )
    assert (
        branch(select1=False, select1_error="FATAL: sorry, too many clients already").name
        == tr.POOL_EXHAUSTED
    )


def test_corrupt_when_select1_says_so() -> None:
    b = branch(
        select1=False,
        deep_postgres="red",
        select1_error="FATAL:  invalid page in block 0 of relation base/16385/1259",
    )
    assert b.name == tr.CORRUPT and "invalid page" in b.reason


def test_postgres_fine_but_api_red_is_not_the_database() -> None:
    assert (
        branch(
            deep_postgres="red",
            deep_postgres_detail="password authentication failed",
            connections=3,
        ).name
        == tr.NOT_THE_DATABASE
    )
    assert branch(deep_status=None, deep_postgres=None).name == tr.NOT_THE_DATABASE
    b = branch(deep_status="red", deep_red_parts="redis")
    assert b.name == tr.NOT_THE_DATABASE and "redis" in b.reason


def test_table_is_readable() -> None:
    t = tr.readable(tr.signal_table({**HEALTHY, "disk_backups": 100.0}))
    assert list(t.columns) == ["what we saw", "what is normal", "what it means"]
    assert "full" in t.loc["Disk: backups filesystem", "what it means"]
    assert t.notna().all().all()


def _backups(n: int, extra: list[str] = ()) -> pd.DataFrame:
    paths = [f"/b/dealix-2026-11-{i:02d}.sql.gz" for i in range(1, n + 1)] + list(extra)
    return pd.DataFrame(
        {
            "path": paths,
            "bytes": [10] * len(paths),
            "modified": [
                datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=i) for i in range(len(paths))
            ],
        }
    )


def test_rotation_never_the_newest_never_wal_never_other_files() -> None:
    extra = [
        "/b/pg_wal/000000010000000000000001",
        "/b/notes.txt",
        "/b/sub/dealix-x.sql.gz",
        "/pg/main/dealix-2026-01-01.sql.gz",
    ]
    c = rotation.rotation_candidates(
        _backups(10, extra),
        backups_dir="/b",
        pattern="dealix-*.sql.gz",
        keep_newest=7,
        data_dir="/pg/main",
    )
    assert list(c["path"]) == [f"/b/dealix-2026-11-0{i}.sql.gz" for i in (1, 2, 3)]
    assert rotation.rotation_candidates(
        _backups(5), backups_dir="/b", pattern="dealix-*.sql.gz", keep_newest=7, data_dir="/pg"
    ).empty
    with pytest.raises(ValueError):
        rotation.rotation_candidates(
            _backups(3), backups_dir="/b", pattern="dealix-*.sql.gz", keep_newest=0, data_dir="/pg"
        )


def test_protected_backups_are_the_newest_eligible_ones() -> None:
    extra = ["/b/notes.txt", "/b/pg_wal/000000010000000000000001"]  # newer than any backup
    newest = rotation.backup_files(
        _backups(10, extra), backups_dir="/b", pattern="dealix-*.sql.gz", data_dir="/pg"
    ).head(3)
    assert list(newest["path"]) == [f"/b/dealix-2026-11-{d:02d}.sql.gz" for d in (10, 9, 8)]


def test_failed_restart_becomes_will_not_start_with_the_log() -> None:
    # supervisord retried the start: each attempt logs the cause, then FATAL
    attempt = (
        '2026-11-27 03:00:0{n}.1 UTC [40{n}] LOG:  invalid value for parameter "shared_buffers": "x"\n'
        '2026-11-27 03:00:0{n}.1 UTC [40{n}] FATAL:  configuration file "/pg/main/sandbox.conf" contains errors\n'
    )
    log = "2026-11-27 03:00:00.0 UTC [39] LOG:  received fast shutdown request\n" + "".join(
        attempt.format(n=n) for n in (1, 2, 3)
    )
    gist = logs.log_gist(log)
    assert gist == (
        'LOG:  invalid value for parameter "shared_buffers": "x" | '
        'FATAL:  configuration file "/pg/main/sandbox.conf" contains errors'
    )
    assert logs.log_gist("LOG: a\nLOG: b\n") == "LOG: a | LOG: b"
    assert logs.log_gist("FATAL: a\nLOG: b\nFATAL: c\n") == "FATAL: a | FATAL: c"
    b = tr.Branch(tr.CORRUPT, f"{tr.WONT_START}: the restart failed; its log ends: {gist}")
    reason = tr.reason_for_restore(b)
    assert reason.startswith("database will not start: LOG: invalid value for parameter")
    assert "shared_buffers" in reason and '"' not in reason
    cmd = tr.handoff_command("sandbox", reason)
    assert cmd.startswith("runbook run restore_incident --env sandbox -p reason ")


def test_only_changing_branches_take_the_lock() -> None:
    changing = {b for b in tr.BRANCHES if tr.changes_server(tr.Branch(b, ""))}
    assert changing == {tr.SERVICE_FAILED, tr.DISK_FULL, tr.POOL_EXHAUSTED}
    assert not llm.changes_server(llm.Decision(llm.NO_INCIDENT, ""))
    assert all(
        llm.changes_server(llm.Decision(d, "")) for d in (llm.PROTECTING, llm.FAILOVER, llm.RECOVER)
    )


def test_backups_dir_inside_data_dir_yields_nothing() -> None:
    c = rotation.rotation_candidates(
        _backups(10), backups_dir="/b", pattern="dealix-*.sql.gz", keep_newest=1, data_dir="/b"
    )
    assert c.empty


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ORDER = ["anthropic", "openai", "google"]


def decide(**kw):
    args = dict(
        priority=ORDER,
        down={p: False for p in ORDER},
        down_since={},
        breakers={p: "closed" for p in ORDER},
        growth_per_min=0.0,
        dlq_depth=0,
        now=NOW,
        failover_after_minutes=30,
    )
    args.update(kw)
    return llm.decide(**args)


def test_decisions() -> None:
    assert decide().name == llm.NO_INCIDENT
    down = {"anthropic": True, "openai": False, "google": False}
    recent = {"anthropic": NOW - timedelta(minutes=10)}
    old = {"anthropic": NOW - timedelta(minutes=45)}
    d = decide(down=down, down_since=recent, breakers={"anthropic": "open"}, growth_per_min=60)
    assert d.name == llm.PROTECTING and d.new_order is None and "10 min" in d.reason
    d = decide(down=down, down_since=old, breakers={"anthropic": "open"})
    assert d.name == llm.FAILOVER and d.new_order == ["openai", "google", "anthropic"]
    d = decide(down={"anthropic": True, "openai": True, "google": False}, down_since=old)
    assert d.new_order == ["google", "anthropic", "openai"]
    assert decide(down={p: True for p in ORDER}, down_since=old).name == llm.PROTECTING
    assert decide(breakers={"anthropic": "half_open"}, dlq_depth=4).name == llm.RECOVER
    assert decide(dlq_depth=4).name == llm.RECOVER
    # a broken fallback is not an incident of the primary
    assert (
        decide(down={"anthropic": False, "openai": True, "google": False}).name == llm.NO_INCIDENT
    )
    # down, no incident on the page and no breaker time: never fail over blind
    assert decide(down=down, down_since={}).name == llm.PROTECTING


def test_status_page_summary() -> None:
    body = {
        "status": {"indicator": "major", "description": "Partial System Outage"},
        "incidents": [
            {
                "name": "Elevated errors",
                "created_at": "2026-11-27T11:00:00.000Z",
                "resolved_at": None,
            }
        ],
    }
    row = llm.summarize_status("anthropic", body)
    assert row["down"] is True and row["since"] == datetime(2026, 11, 27, 11, tzinfo=UTC)
    assert llm.summarize_status("openai", None)["down"] is None


# status.cloud.google.com/incidents.json, trimmed from the real shape: a list of
# every product's incidents, newest first; an ongoing one has no "end".
GOOGLE_INCIDENTS = [
    {
        "id": "a1b2c3d4e5f6g7h8i9j0",
        "number": "18277433102519380001",
        "begin": "2026-11-27T11:05:00+00:00",
        "created": "2026-11-27T11:12:43+00:00",
        "modified": "2026-11-27T11:40:02+00:00",
        "external_desc": "Gemini API requests failing with 503 UNAVAILABLE",
        "updates": [],
        "most_recent_update": {
            "created": "2026-11-27T11:40:02+00:00",
            "when": "2026-11-27T11:40:02+00:00",
            "text": "We are investigating elevated error rates.",
            "status": "SERVICE_DISRUPTION",
            "affected_locations": [{"title": "Global", "id": "global"}],
        },
        "status_impact": "SERVICE_DISRUPTION",
        "severity": "high",
        "service_key": "Z0FZJAMvEB4j3NbCJs6B",
        "service_name": "Vertex Gemini API",
        "affected_products": [{"title": "Vertex Gemini API", "id": "Z0FZJAMvEB4j3NbCJs6B"}],
        "uri": "incidents/a1b2c3d4e5f6g7h8i9j0",
    },
    {
        "id": "k1l2m3",
        "begin": "2026-11-27T08:00:00+00:00",
        "external_desc": "Cloud Build jobs in europe-west3 are delayed",
        "status_impact": "SERVICE_DISRUPTION",
        "service_name": "Cloud Build",
        "affected_products": [{"title": "Cloud Build", "id": "fw8GzBdZdqy4THau7e1y"}],
    },
    {
        "id": "n4o5p6",
        "begin": "2026-11-18T09:00:00+00:00",
        "end": "2026-11-18T10:35:00+00:00",
        "external_desc": "Elevated latency for Vertex Gemini API in us-central1",
        "status_impact": "SERVICE_DISRUPTION",
        "service_name": "Vertex Gemini API",
        "affected_products": [{"title": "Vertex Gemini API", "id": "Z0FZJAMvEB4j3NbCJs6B"}],
    },
]


def test_google_status_page_is_read_as_incidents_json() -> None:
    assert llm.STATUS_FORMATS["google"][0] == "/incidents.json"
    assert llm.STATUS_FORMATS["anthropic"][0] == "/api/v2/summary.json"
    row = llm.summarize_google("google", GOOGLE_INCIDENTS)
    assert row["down"] is True
    assert row["incident"] == "Gemini API requests failing with 503 UNAVAILABLE"
    assert row["since"] == datetime(2026, 11, 27, 11, 5, tzinfo=UTC)
    assert "1 ongoing" in row["status page"] and "SERVICE_DISRUPTION" in row["status page"]
    # another product's ongoing incident and a Gemini incident that is over do not count
    calm = llm.summarize_google("google", GOOGLE_INCIDENTS[1:])
    assert calm["down"] is False and calm["incident"] == "" and calm["since"] is None
    # information only: shown, but the product works
    info = [{**GOOGLE_INCIDENTS[0], "status_impact": "SERVICE_INFORMATION"}]
    assert llm.summarize_google("google", info)["down"] is False
    # a Statuspage body (or an error page) is not Google's list: no answer, not "up"
    assert llm.summarize_google("google", {"status": {"indicator": "none"}})["down"] is None
    assert llm.summarize_google("google", None)["status page"] == "no answer"


def test_crash_recovery_lines_of_an_earlier_lifetime_are_not_corruption() -> None:
    # The cluster's own log file (Debian) keeps every lifetime: crash recovery logs the
    # normal end of the WAL as "invalid record length" at LOG level (found on the twin).
    log = "\n".join(
        [
            "2026-12-02 14:05:44.251 UTC [282] LOG:  database system was not properly shut "
            "down; automatic recovery in progress",
            "2026-12-02 14:05:44.470 UTC [282] LOG:  invalid record length at 0/32513C0: "
            "wanted 24, got 0",
            "2026-12-02 14:05:44.997 UTC [279] LOG:  database system is ready to accept "
            "connections",
            "2026-12-02 14:06:10.403 UTC [400] dealix@dealix FATAL:  the database system is "
            "shutting down",
            "2026-12-02 14:06:10.449 UTC [368] LOG:  database system is shut down",
        ]
    )
    b = branch(
        postgres_service="inactive (dead)",
        postgres_unit="postgresql@15-main",
        select1=False,
        select1_error="No such file or directory",
        deep_postgres="red",
        postgres_log=log,
    )
    assert b.name == tr.SERVICE_FAILED and "postgresql@15-main" in b.reason
    # the same words as an error since the last start still mean corruption
    b = branch(
        postgres_service="failed (failed)",
        select1=False,
        postgres_log=log + "\n2026-12-02 14:07:00.000 UTC [501] PANIC:  invalid record length",
    )
    assert b.name == tr.CORRUPT
