"""The monthly drill as the scheduling docs write it, run by systemd on the twin
(issue 14 part 5).

The service and timer are docs/scheduling/'s files, installed verbatim on the
twin (lib/runbook/twin/drill.py) with one drop-in that swaps the profile
(`--env staging` -> `--env twin-drill`, production.yaml run on the server
itself); the runbook is installed at /opt/dealix-runbook as the docs say.
Every effect is read on the twin: systemctl's own properties, the record and
notebook the run left, the databases in the cluster.

Root and systemd-nspawn only (`-m twin`); the tests share one twin and its
faults, so they run one after the other.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import profile_keys

from runbook.core.paths import project_root
from runbook.twin import drill

pytestmark = pytest.mark.twin

SCRATCH = "dealix_restore_test"
SLEEPING = (
    'cd / && sudo -n -u postgres psql -Atc "SELECT count(*) FROM pg_stat_activity '
    "WHERE datname = 'dealix_restore_test' AND query LIKE '%pg_sleep%'\""
)
OUTPUTS = f"{drill.RUNBOOK_DIR}/outputs/{drill.DRILL_PROFILE}/restore_drill"
PROPS = (
    "ActiveState",
    "SubState",
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "Type",
    "KillMode",
    "KillSignal",
    "TimeoutStopUSec",
    "TimeoutStartUSec",
    "WorkingDirectory",
    "FragmentPath",
    "DropInPaths",
    "ExecStart",
)


# ---------------------------------------------------------------- no twin needed


def _docs_text() -> tuple[Path, str]:
    """The scheduling docs: docs/scheduling.md once the README's section moved there."""
    root = project_root()
    moved = root / "docs" / "scheduling.md"
    path = moved if moved.exists() else root / "README.md"
    return path, path.read_text()


def test_the_docs_quote_the_unit_files_verbatim() -> None:
    """docs/scheduling/ is the one text of the units: the docs show it word for word."""
    path, text = _docs_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    for name, body in drill.unit_texts().items():
        assert body in blocks, f"{path} does not quote docs/scheduling/{name} verbatim"


def test_the_drop_in_changes_only_the_profile() -> None:
    doc = drill.documented_exec_start()
    ours = drill.drill_exec_start(drill.DRILL_PROFILE)
    assert doc.replace("staging", drill.DRILL_PROFILE) == ours
    lines = drill.dropin_text().splitlines()
    # [Service], then reset the documented ExecStart and give the one line: nothing else
    assert [ln for ln in lines if not ln.startswith("#")] == [
        "[Service]",
        "ExecStart=",
        f"ExecStart={ours}",
    ]


def test_the_drill_profile_is_production_run_on_the_server() -> None:
    prod, ours = profile_keys("production"), profile_keys(drill.DRILL_PROFILE)
    differs = {k for k in prod.keys() | ours.keys() if prod.get(k) != ours.get(k)}
    assert differs == {"name", "description", "target.transport"}
    assert ours["target.transport"] == "local" and ours["kind"] == "production"


# ---------------------------------------------------------------- on the twin


@pytest.fixture(scope="module")
def drill_twin(twin):
    drill.install_runbook(twin, echo=print)
    drill.install_units(twin)
    yield twin
    twin.ssh(
        f"systemctl disable --now {drill.TIMER} >/dev/null 2>&1; "
        f"systemctl reset-failed {drill.UNIT} 2>/dev/null; true",
        check=False,
    )


BACKUP_FILES = "cd /var/backups/postgres && stat -c '%n %s %Y %U' * .faults 2>&1; md5sum *"


@pytest.fixture
def healed(drill_twin):
    before = drill_twin.ssh(BACKUP_FILES, check=False).stdout
    yield drill_twin
    drill_twin.heal()
    # `heal` puts every backup back as it was: same names, sizes, mtimes, owner, bytes
    assert drill_twin.ssh(BACKUP_FILES, check=False).stdout == before
    drill_twin.ssh(f"systemctl reset-failed {drill.UNIT} 2>/dev/null; true", check=False)


def show(t, unit: str = drill.UNIT) -> dict[str, str]:
    out = t.ssh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in PROPS)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def run_dirs(t) -> list[str]:
    out = t.ssh(f"ls -1d {OUTPUTS}/*/ 2>/dev/null; true").stdout
    return sorted(line.rstrip("/") for line in out.split())


def new_record(t, before: list[str]) -> tuple[str, dict[str, Any]]:
    new = [d for d in run_dirs(t) if d not in before]
    assert len(new) == 1, (before, run_dirs(t))
    return new[0], json.loads(t.ssh(f"cat {new[0]}/record.json").stdout)


def databases(t) -> set[str]:
    out = t.ssh("cd / && sudo -n -u postgres psql -Atc 'SELECT datname FROM pg_database'").stdout
    return set(out.split())


def statuses(record: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in record["checks"]}


def test_the_documented_unit_runs_the_drill_and_ends_inactive_success(healed) -> None:
    t = healed
    # what is installed is the documented text, byte for byte
    for name in (drill.UNIT, drill.TIMER):
        assert t.ssh(f"cat /etc/systemd/system/{name}").stdout == drill.unit_texts()[name]
    before = run_dirs(t)
    started = t.ssh(f"systemctl start {drill.UNIT}", check=False, timeout=900)
    assert started.returncode == 0, started.stderr
    p = show(t)
    assert (p["ActiveState"], p["SubState"], p["Result"]) == ("inactive", "dead", "success"), p
    assert p["ExecMainStatus"] == "0"
    # the documented settings are the ones in force
    assert p["Type"] == "oneshot" and p["KillMode"] == "mixed" and p["KillSignal"] == "2"
    assert p["TimeoutStopUSec"] == "2min" and p["TimeoutStartUSec"] == "30min"
    assert p["WorkingDirectory"] == drill.RUNBOOK_DIR
    assert p["FragmentPath"] == f"/etc/systemd/system/{drill.UNIT}"
    assert p["DropInPaths"] == drill.DROPIN
    assert "--env twin-drill --confirm twin-drill" in p["ExecStart"]
    run_dir, record = new_record(t, before)
    assert record["outcome"] == "ok" and record["exit_code"] == 0, record.get("error")
    assert record["environment"] == "twin-drill" and record["finished"]
    st = statuses(record)
    for name in ("Backup fresh (RPO)", "Restore completed", "Row count leads", "Teardown"):
        assert st[name] == "passed", (name, record["checks"])
    assert t.ssh(f"test -s {run_dir}/restore_drill.ipynb", check=False).returncode == 0
    assert SCRATCH not in databases(t)
    # the run's story is in the unit's journal, as an operator would read it
    journal = t.ssh(f"journalctl -u {drill.UNIT} -o cat --no-pager -n 200").stdout
    assert run_dir.split("/")[-1] in journal, journal[-2000:]


def test_systemctl_stop_mid_restore_leaves_a_complete_interrupted_record(healed) -> None:
    """KillSignal=SIGINT, KillMode=mixed: only the runner gets SIGINT; it interrupts the
    kernel, which drops the scratch database, and writes the record (exit 5)."""
    t = healed
    t.fault("slow-backup")
    before = run_dirs(t)
    t.ssh(f"systemctl start --no-block {drill.UNIT}")
    sleeping = "0"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        sleeping = t.ssh(
            SLEEPING,
            check=False,
        ).stdout.strip()
        if sleeping not in ("", "0") or show(t)["ActiveState"] != "activating":
            break
        time.sleep(1)
    assert sleeping not in ("", "0"), (
        show(t),
        t.ssh(f"journalctl -u {drill.UNIT} -n 50 -o cat").stdout,
    )
    time.sleep(6)  # one progress poll (every 5 s) while psql sleeps
    stopped = t.ssh(f"systemctl stop {drill.UNIT}", check=False, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    p = show(t)
    # the runner ended on its own with the interrupted code, before TimeoutStopSec's SIGKILL
    assert p["ExecMainCode"] == "1" and p["ExecMainStatus"] == "5", p
    # and exit 5 is no success to systemd: an interrupted drill leaves the unit failed
    # (journal: "status=5/NOTINSTALLED", systemd's LSB name for 5), so monitoring sees it
    assert (p["ActiveState"], p["Result"]) == ("failed", "exit-code"), p
    assert SCRATCH not in databases(t)
    # nothing of the run is left in the unit's cgroup (no psql, no kernel)
    left = t.ssh(f"systemctl show {drill.UNIT} -p MainPID -p ControlPID --value").stdout.split()
    assert left == ["0", "0"], left
    run_dir, record = new_record(t, before)
    assert record["outcome"] == "interrupted" and record["exit_code"] == 5, record
    assert record["finished"] and record["steps"], record
    assert statuses(record)["Teardown"] == "passed", record["checks"]
    executed = t.ssh(f"cat {run_dir}/restore_drill.ipynb").stdout
    assert "dump read (100 %), psql finishing" in executed


def test_a_failed_drill_leaves_the_unit_failed_with_its_exit_code(healed) -> None:
    t = healed
    t.fault("corrupt-backup")
    before = run_dirs(t)
    started = t.ssh(f"systemctl start {drill.UNIT}", check=False, timeout=900)
    assert started.returncode != 0  # systemctl says the job failed
    failed = t.ssh(f"systemctl is-failed {drill.UNIT}", check=False)
    assert failed.returncode == 0 and failed.stdout.strip() == "failed"
    p = show(t)
    _, record = new_record(t, before)
    assert record["outcome"] == "dod_not_met" and record["exit_code"] == 3, record
    assert statuses(record)["Restore completed"] == "failed"
    assert p["Result"] == "exit-code" and p["ExecMainStatus"] == str(record["exit_code"]), p
    assert SCRATCH not in databases(t)


def _next_first_of_month_0400(now: datetime) -> datetime:
    at = now.replace(day=1, hour=4, minute=0, second=0, microsecond=0)
    if at > now:
        return at
    return at.replace(year=at.year + (at.month == 12), month=at.month % 12 + 1)


def test_the_timer_is_accepted_and_scheduled_for_the_1st_at_0400_utc(drill_twin) -> None:
    t = drill_twin
    verify = t.ssh(
        f"cd /etc/systemd/system && systemd-analyze verify {drill.UNIT} {drill.TIMER} 2>&1",
        check=False,
    )
    assert verify.returncode == 0 and not verify.stdout.strip(), verify.stdout
    spec = re.search(r"^OnCalendar=(.*)$", drill.unit_texts()[drill.TIMER], re.M)
    assert spec
    now = datetime.now(UTC)
    want = _next_first_of_month_0400(now)
    cal = t.ssh(f"TZ=UTC systemd-analyze calendar {shlex.quote(spec.group(1))}").stdout
    assert f"Next elapse: {want:%a %Y-%m-%d %H:%M:%S} UTC" in cal, cal
    t.ssh(f"systemctl enable --now {drill.TIMER}")
    props = t.ssh(
        f"TZ=UTC systemctl show {drill.TIMER} -p ActiveState -p UnitFileState -p Persistent "
        "-p Unit -p NextElapseUSecRealtime"
    ).stdout
    p = dict(line.split("=", 1) for line in props.splitlines())
    assert p["ActiveState"] == "active" and p["UnitFileState"] == "enabled", p
    assert p["Persistent"] == "yes" and p["Unit"] == drill.UNIT
    assert p["NextElapseUSecRealtime"] == f"{want:%a %Y-%m-%d %H:%M:%S} UTC", (p, want)
    listed = t.ssh(f"TZ=UTC systemctl list-timers --all --no-pager {drill.TIMER}").stdout
    assert f"{want:%Y-%m-%d %H:%M:%S} UTC" in listed and drill.UNIT in listed, listed


def test_the_documented_crontab_line_runs_the_drill_in_crons_environment(healed) -> None:
    """The command part of the crontab line, with cron's bare environment (PATH
    /usr/bin:/bin, HOME, SHELL=/bin/sh); only the profile is swapped, as in the drop-in."""
    t = healed
    line = drill.unit_texts()["crontab"].strip()
    fields = line.split(None, 5)
    assert fields[:5] == ["0", "4", "1", "*", "*"]  # 04:00 on the 1st (the server's clock)
    command = fields[5].replace(
        drill.DOCUMENTED_PROFILE, f"--env {drill.DRILL_PROFILE} --confirm {drill.DRILL_PROFILE}"
    )
    before = run_dirs(t)
    t.ssh("rm -f /var/log/dealix-restore-drill.log")
    ran = t.ssh(
        "env -i PATH=/usr/bin:/bin HOME=/root SHELL=/bin/sh LOGNAME=root /bin/sh -c "
        + shlex.quote(command),
        check=False,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stderr
    run_dir, record = new_record(t, before)
    assert record["outcome"] == "ok" and record["exit_code"] == 0, record.get("error")
    log = t.ssh("cat /var/log/dealix-restore-drill.log").stdout
    assert run_dir.split("/")[-1] in log, log[-2000:]
    assert SCRATCH not in databases(t)


def test_a_build_step_that_hangs_fails_in_time_and_leaves_no_child(tmp_path) -> None:
    """A CI build whose mirror stalls must fail with the step's name, not hang: the
    timeout ends the whole process tree (debootstrap's wget, apt's methods)."""
    from runbook.twin.common import TwinError, run

    pidfile = tmp_path / "child.pid"
    t0 = time.monotonic()
    with pytest.raises(TwinError, match=r"^debootstrap: .* timed out after 1 s and was killed"):
        run(["sh", "-c", f"sleep 600 & echo $! > {pidfile}; wait"], "debootstrap", timeout=1)
    # bounded by the timeout (1 s), not by the child's 600 s: a generous margin for load
    assert time.monotonic() - t0 < 120
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists(), f"the step's child {child} outlived it"
