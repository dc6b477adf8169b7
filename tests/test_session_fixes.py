"""Two fixes of the architecture step, against the real sandbox.

- `Session.close()` closes every HTTP client it opened (it looked for "_api",
  stored as "api", and never closed GitHub's).
- The incident restore's preflight records the drill's backup checks, in the
  drill's words (it had its own copy, worded differently).
"""

from __future__ import annotations

from pathlib import Path

from runbook import open_scenario, open_session
from runbook.session import HTTP_CLIENTS


def test_close_closes_every_http_client(sandbox, tmp_path: Path) -> None:
    s = open_session("health_check", env="sandbox", run_dir=tmp_path / "run")
    clients = [getattr(s, name) for name in HTTP_CLIENTS]  # opens each one
    s.api.health()
    assert not any(c._client.is_closed for c in clients)
    s.close()
    assert [
        name for name, c in zip(HTTP_CLIENTS, clients, strict=True) if not c._client.is_closed
    ] == []


def _backup_checks(s) -> dict[str, tuple[str, str]]:
    return {c.name: (c.expected, c.status) for c in s.checks if c.name.startswith("Backup ")}


def test_incident_preflight_uses_the_drills_backup_checks(
    sandbox, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path))
    base = {"env": "sandbox", "dry_run": True, "confirm": None, "break_stale_lock": False}
    s, drill = open_scenario(
        "restore_drill",
        namespace={
            **base,
            "backup": None,
            "rpo_hours": 24,
            "row_tolerance_pct": 5,
            "time_target_minutes": 15,
            "tables": None,
            "scratch_db": "dealix_restore_test",
            "min_backup_bytes": None,
            "jobs": None,
        },
    )
    try:
        drill.preflight()
        drill_checks = _backup_checks(s)
    finally:
        s.close()
    s, incident = open_scenario(
        "restore_incident",
        namespace={
            **base,
            "reason": "a test",
            "backup": None,
            "incident_time": None,
            "min_backup_bytes": None,
        },
    )
    try:
        incident.preflight()
        incident_checks = _backup_checks(s)
    finally:
        s.close()
    # the incident restore takes any good backup: no RPO check, the rest word for word
    assert set(drill_checks) == {"Backup found", "Backup fresh (RPO)", "Backup size"}
    # (plus gzip -t when the newest backup is a plain gzip'd dump)
    assert set(incident_checks) - {"Backup readable (gzip -t)"} == {"Backup found", "Backup size"}
    for name in ("Backup found", "Backup size"):
        assert incident_checks[name] == drill_checks[name], name
