"""Backup freshness takes the older of mtime and the name's date; `--parameters-dir` (issue 12, part 6).

Against the sandbox's real backups dir: a copy of a real backup is planted
with a fresh mtime and an old date in its name (a file restored from tape
or copied by hand), and another with today's date in its name and an old
mtime (a re-dated name). The RPO check must see the older age each time
and say where it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbook import cli
from runbook.core.paths import project_root
from runbook.ops import backups
from runbook.scenarios._restore import RestoreSteps
from runbook.session import open_session


@pytest.fixture
def planted_backups(sandbox):
    folder = Path(sandbox.state["backups_dir"])
    real = sorted(folder.glob("dealix-*.sql.gz"))[-1]
    today = datetime.now(UTC).date().isoformat()
    old_name = folder / "dealix-2020-01-01.sql.gz"  # fresh mtime, old name
    old_mtime = folder / f"dealix-{today}T0000Z-redated.sql.gz"  # fresh name, old mtime
    for path in (old_name, old_mtime):
        shutil.copyfile(real, path)
    five_days_ago = time.time() - 5 * 86400
    os.utime(old_mtime, (five_days_ago, five_days_ago))
    try:
        yield old_name.name, old_mtime.name
    finally:
        old_name.unlink(missing_ok=True)
        old_mtime.unlink(missing_ok=True)


def test_backup_age_is_the_older_of_mtime_and_name(sandbox, planted_backups, tmp_path) -> None:
    old_name, old_mtime = planted_backups
    s = open_session("backup-age-test", env="sandbox", run_dir=tmp_path / "run")
    try:
        frame = backups.list_backups(s, limit=None)
        by_name = backups.choose(frame, old_name)
        by_mtime = backups.choose(frame, old_mtime)
        assert by_name is not None and by_mtime is not None
        assert by_name["age_from"] == "name" and by_name["age_hours"] > 24 * 365
        assert by_mtime["age_from"] == "mtime" and 119 < by_mtime["age_hours"] < 121
        # the newest backup is never one of these two
        assert backups.choose(frame)["name"] not in planted_backups
        steps = RestoreSteps(s)
        assert not steps.backup_checks(by_name, rpo_hours=24, min_bytes=1024)["fresh"]
        assert not steps.backup_checks(by_mtime, rpo_hours=24, min_bytes=1024)["fresh"]
    finally:
        s.close()
    fresh = [c for c in s.checks if c.name == "Backup fresh (RPO)"]
    assert [c.passed for c in fresh] == [False, False]
    assert "by the date in its name" in fresh[0].actual and "is newer" in fresh[0].actual
    assert fresh[0].note.startswith("age taken from the name")
    assert "by its mtime" in fresh[1].actual and fresh[1].note.startswith(
        "age taken from the mtime"
    )


def test_parameters_dir_flag_reaches_the_runner_and_the_kernel(
    sandbox, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    # the flag sets the variable for the kernel: monkeypatch restores it afterwards
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(project_root() / "parameters"))
    params = tmp_path / "params"
    shutil.copytree(project_root() / "parameters", params)
    # a profile only this folder has: the runner (which checks the parameters) and
    # the kernel (whose session writes the record) can only find it through the flag
    text = (params / "sandbox.yaml").read_text().replace("name: sandbox", "name: elsewhere")
    (params / "elsewhere.yaml").write_text(text)
    assert cli.main(["run", "health_check", "--env", "elsewhere"]) == 2
    assert "elsewhere" in capsys.readouterr().err
    code = cli.main(["run", "health_check", "--env", "elsewhere", "--parameters-dir", str(params)])
    out = capsys.readouterr().out
    assert code == 0, out
    (record_path,) = (tmp_path / "outputs").rglob("record.json")
    record = json.loads(record_path.read_text())
    assert record["environment"] == "elsewhere" and record["outcome"] == "ok"
    assert record["runbook_sha"] and record["steps"], "the kernel's session did not write it"


def test_parameters_dir_flag_refuses_a_folder_without_profiles(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(project_root() / "parameters"))
    code = cli.main(["run", "health_check", "--parameters-dir", str(tmp_path)])
    assert code == 2
    assert "no <env>.yaml profile in it" in capsys.readouterr().err
    code = cli.main(["run", "health_check", "--parameters-dir", str(tmp_path / "nope")])
    assert code == 2
    assert "no such directory" in capsys.readouterr().err
