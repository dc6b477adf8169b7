"""The runbook itself on the twin, and the monthly drill as systemd runs it there.

The scheduling documentation's unit files (docs/scheduling/: the service, the
timer and the crontab line; the docs quote them and a test checks the quote)
are installed on the twin verbatim, so what runs there is the unit as
documented. Two things must differ from a real staging drill host, and both
are added beside the documented files, never edited into them:

- the project at /opt/dealix-runbook, with its .venv and the `dealix-runbook`
  kernel: the checkout's files are copied in over SSH and the venv is built
  offline from wheels that this machine's pip downloads (the twin has no
  network, as the app layer's build; lib/runbook/twin/build.py);
- a drop-in, dealix-restore-drill.service.d/twin.conf, that replaces only the
  profile in ExecStart: the documented line says `--env staging --confirm
  staging`, whose host is a placeholder; the twin drills itself with
  parameters/twin-drill.yaml (production.yaml with `target.transport: local`).

The venv is cached under `$RUNBOOK_TWIN_CACHE` (runbook-venv-KEY.tar.zst,
keyed by pyproject.toml and the OS layer), so a second install streams it in
instead of running pip.

Example::

    >>> sorted(unit_texts())
    ['crontab', 'dealix-restore-drill.service', 'dealix-restore-drill.timer']
    >>> drill_exec_start("twin-drill").split()[-4:]
    ['--env', 'twin-drill', '--confirm', 'twin-drill']
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.core.paths import project_root
from runbook.sandbox.build.host import run_command
from runbook.twin.common import Echo, TwinError, pip_download, run, twin_cache_dir

if TYPE_CHECKING:
    from runbook.twin.instance import Twin

RUNBOOK_DIR = "/opt/dealix-runbook"
UNIT = "dealix-restore-drill.service"
TIMER = "dealix-restore-drill.timer"
DROPIN = f"/etc/systemd/system/{UNIT}.d/twin.conf"
DRILL_PROFILE = "twin-drill"
# the documented profile, which the drop-in replaces (and nothing else)
DOCUMENTED_PROFILE = "--env staging --confirm staging"
# building the project in editable mode offline needs its build backend as wheels too
BUILD_REQUIREMENTS = ["setuptools>=68", "wheel"]


def scheduling_dir() -> Path:
    """docs/scheduling: the one place the unit files' text lives."""
    return project_root() / "docs" / "scheduling"


def unit_texts() -> dict[str, str]:
    """The documented files, by name: the service, the timer and the crontab line."""
    d = scheduling_dir()
    return {name: (d / name).read_text() for name in ("crontab", UNIT, TIMER)}


def documented_exec_start() -> str:
    lines = [ln for ln in unit_texts()[UNIT].splitlines() if ln.startswith("ExecStart=")]
    if len(lines) != 1 or DOCUMENTED_PROFILE not in lines[0]:
        raise TwinError(
            "drill",
            f"docs/scheduling/{UNIT} must have one ExecStart= naming `{DOCUMENTED_PROFILE}`",
        )
    return lines[0].removeprefix("ExecStart=")


def drill_exec_start(profile: str) -> str:
    """The documented ExecStart with only the profile replaced."""
    return documented_exec_start().replace(
        DOCUMENTED_PROFILE, f"--env {profile} --confirm {profile}"
    )


def dropin_text(profile: str = DRILL_PROFILE) -> str:
    return (
        "# The twin drills itself (parameters/twin-drill.yaml): only the profile differs\n"
        "# from the documented unit. An empty ExecStart= clears the documented one first.\n"
        f"[Service]\nExecStart=\nExecStart={drill_exec_start(profile)}\n"
    )


def _project_files() -> list[str]:
    """What a checkout holds: tracked and untracked files, less what git ignores."""
    root = project_root()
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        raise TwinError("drill", f"git ls-files in {root} failed: {out.stderr.decode()[:200]}")
    return [p for p in out.stdout.decode().split("\0") if p and (root / p).is_file()]


def _dependencies() -> list[str]:
    meta = tomllib.loads((project_root() / "pyproject.toml").read_text())
    return [*meta["project"]["dependencies"], *BUILD_REQUIREMENTS]


def venv_key(os_key: str) -> str:
    h = hashlib.sha256(os_key.encode())
    h.update((project_root() / "pyproject.toml").read_bytes())
    return h.hexdigest()[:16]


def _wheels(key: str, python_version: str, log: Path) -> Path:
    """The runbook's dependencies as wheels for the twin's interpreter (Debian's 3.11.2),
    not this machine's: a release that needs a newer 3.11.x is passed over for one the
    twin can install."""
    dest = twin_cache_dir() / f"runbook-wheels-{key}"
    if (dest / ".complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    reqs = dest / "requirements.txt"
    reqs.write_text("\n".join(_dependencies()) + "\n")
    pip_download(
        [reqs],
        dest,
        "pip download (runbook)",
        log,
        timeout=900,
        python_version=python_version,
    )
    (dest / ".complete").write_text("")
    return dest


def _send_tar(t: Twin, tarball: Path, dest: str, step: str) -> None:
    with tarball.open("rb") as fh:
        run_command(
            t.ssh_argv(f"mkdir -p {shlex.quote(dest)} && tar -x -C {shlex.quote(dest)} -f -"),
            step,
            error=TwinError,
            stdin=fh,
            timeout=600,
            what=f"tar into {dest}",
        )


def install_runbook(t: Twin, echo: Echo = print) -> dict[str, float]:
    """/opt/dealix-runbook on the twin: this checkout's files, a .venv with the project
    installed editable (as scripts/setup.sh does), and the dealix-runbook kernel.
    Idempotent; returns the seconds each part took."""
    st = t.state
    times: dict[str, float] = {}
    log = t.dir / "drill-install.log"
    key = venv_key(st["layers"]["os"])
    cache = twin_cache_dir()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twin-drill-") as tmp:
        src = Path(tmp) / "project.tar"
        files = _project_files()
        (Path(tmp) / "files").write_text("\n".join(files) + "\n")
        run(
            ["tar", "-C", str(project_root()), "-cf", str(src), "-T", str(Path(tmp) / "files")],
            "drill: pack the checkout",
        )
        # a fresh copy each time: the twin runs exactly this checkout's files
        t.ssh(f"rm -rf {RUNBOOK_DIR}/lib {RUNBOOK_DIR}/notebooks {RUNBOOK_DIR}/parameters")
        _send_tar(t, src, RUNBOOK_DIR, "drill: copy the checkout")
    times["copy"] = time.monotonic() - t0
    have = t.ssh(
        f"test -x {RUNBOOK_DIR}/.venv/bin/runbook && cat {RUNBOOK_DIR}/.venv/.twin-key",
        check=False,
    ).stdout.strip()
    t1 = time.monotonic()
    cached = cache / f"runbook-venv-{key}.tar.zst"
    if have == key:
        echo(f"  runbook    /opt/dealix-runbook up to date (venv {key})")
        if not cached.exists():
            _save_venv(t, cached, echo)
        return times
    if cached.exists():
        t.ssh(f"rm -rf {RUNBOOK_DIR}/.venv")
        # decompressed here (the server has no zstd), streamed straight into tar there
        unpack = subprocess.Popen(["zstd", "-q", "-d", "-c", str(cached)], stdout=subprocess.PIPE)
        assert unpack.stdout is not None
        into = subprocess.run(
            t.ssh_argv(f"tar -x -C {RUNBOOK_DIR} -f -"),
            stdin=unpack.stdout,
            capture_output=True,
            timeout=600,
            check=False,
        )
        unpack.stdout.close()
        if unpack.wait() != 0 or into.returncode != 0:
            raise TwinError(
                "drill: copy the cached venv",
                f"zstd exited {unpack.returncode}, tar on the twin {into.returncode}; "
                f"delete {cached} to rebuild it",
                log_tail=into.stderr.decode(errors="replace").splitlines()[-10:],
            )
        times["venv_from_cache"] = time.monotonic() - t1
        echo(f"  runbook    venv from {cached.name} in {times['venv_from_cache']:.1f} s")
        return times
    python_version = t.ssh(
        "python3 -c 'import platform; print(platform.python_version())'"
    ).stdout.strip()
    wheels = _wheels(f"{key}-py{python_version}", python_version, log)
    times["wheels"] = time.monotonic() - t1
    t2 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twin-drill-") as tmp:
        wt = Path(tmp) / "wheels.tar"
        run(["tar", "-C", str(wheels), "-cf", str(wt), "."], "drill: pack wheels")
        t.ssh("rm -rf /var/tmp/runbook-wheels")
        _send_tar(t, wt, "/var/tmp/runbook-wheels", "drill: copy wheels")
    pip = f"{RUNBOOK_DIR}/.venv/bin/pip"
    offline = "--no-index --find-links /var/tmp/runbook-wheels --disable-pip-version-check -q"
    script = " && ".join(
        [
            f"cd {RUNBOOK_DIR}",
            "rm -rf .venv",
            "python3 -m venv .venv",
            f"{pip} install {offline} " + " ".join(shlex.quote(r) for r in BUILD_REQUIREMENTS),
            # no .pyc at install (about a third of pip's time on 2 cores); Python writes
            # them on first import instead
            f"{pip} install {offline} --no-compile --no-build-isolation -e .",
            # the kernel the notebooks name, inside the venv (as scripts/setup.sh)
            ".venv/bin/python -m ipykernel install --sys-prefix --name dealix-runbook "
            "--display-name 'Dealix runbook (.venv)' >/dev/null",
            f"echo {key} > .venv/.twin-key",
            "rm -rf /var/tmp/runbook-wheels",
        ]
    )
    run_command(
        t.ssh_argv(script),
        "drill: pip install on the twin",
        error=TwinError,
        log=log,
        timeout=1200,
        what=f"the install script (log: {log})",
    )
    times["pip_install"] = time.monotonic() - t2
    # keep the built venv: the next twin (same OS layer, same pyproject) streams it in
    t3 = time.monotonic()
    if _save_venv(t, cached, echo):
        times["venv_cached"] = time.monotonic() - t3
    echo(
        "  runbook    installed at /opt/dealix-runbook: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    )
    return times


def _save_venv(t: Twin, cached: Path, echo: Echo) -> bool:
    """The twin's built .venv as a tar.zst in the cache; compressed here, because the
    server has no zstd (and needs none)."""
    part = cached.with_suffix(".part")
    with part.open("wb") as fh:
        pack = subprocess.Popen(
            t.ssh_argv(f"tar -C {RUNBOOK_DIR} -cf - .venv"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert pack.stdout is not None
        zstd = subprocess.run(
            ["zstd", "-q", "-3", "-T0", "-c"], stdin=pack.stdout, stdout=fh, check=False
        )
        pack.stdout.close()
        _, err = pack.communicate(timeout=600)
    if pack.returncode == 0 and zstd.returncode == 0:
        part.replace(cached)
        return True
    part.unlink(missing_ok=True)
    echo(f"  runbook    venv not cached: {err.decode(errors='replace')[-200:]}")
    return False


def install_units(t: Twin, profile: str = DRILL_PROFILE) -> None:
    """The documented service and timer, verbatim, plus the profile drop-in; daemon-reload."""
    texts = unit_texts()
    for name in (UNIT, TIMER):
        _write_remote(t, f"/etc/systemd/system/{name}", texts[name])
    _write_remote(t, DROPIN, dropin_text(profile))
    t.ssh("systemctl daemon-reload")


def _write_remote(t: Twin, path: str, text: str) -> None:
    q = shlex.quote(path)
    proc = subprocess.run(
        t.ssh_argv(f"mkdir -p $(dirname {q}) && cat > {q}.part && mv {q}.part {q}"),
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise TwinError("drill", f"writing {path} on the twin exited {proc.returncode}")
