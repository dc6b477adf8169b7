"""The twin's image: two cached layers, OS then app (TWIN_NOTES §5).

- OS layer: `debootstrap --variant=minbase` of Debian 12, then the server's
  packages with apt inside a non-booted systemd-nspawn
  (sandbox/twin/os-packages.sh). Keyed by the package script, the host's
  apt sources and the ISO week (a weekly refresh keeps it patched).
- App layer: an overlay upper dir over the OS layer, filled by
  sandbox/twin/provision-app.sh in a non-booted nspawn: /opt/dealix as a
  clone with its .venv, the database migrated and seeded with one nightly
  `pg_dump | gzip` per day, dealix-api.service, nginx, ufw, fail2ban.
  Keyed by the OS key, sandbox/app, sandbox/twin and the seed size.

Each layer is kept unpacked (the overlays' lower dirs) and as a tar.zst
under `$RUNBOOK_TWIN_CACHE`; a machine with only the tarballs unpacks them
(about 1 s) instead of building.

Example::

    >>> copy_value(None), copy_value(True), copy_value("a\\tb\\\\c")
    ('\\\\N', 't', 'a\\\\tb\\\\\\\\c')
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook.core.paths import project_root
from runbook.sandbox import seed as sb_seed
from runbook.sandbox.build.app import build_app_repo
from runbook.sandbox.build.envfiles import generate_secrets, write_env_file
from runbook.sandbox.layout import Layout
from runbook.twin.common import (
    Echo,
    TwinError,
    mounted,
    nspawn_argv,
    pip_download,
    remove_cgroups,
    run,
    twin_cache_dir,
    twin_files,
)

SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = "systemd,systemd-sysv,dbus,openssh-server,iproute2,sudo"
# Big enough that the newest nightly dump exceeds production.yaml's
# backups.min_size_bytes (1 MiB): 40 000 leads gave a 2.7 MiB dump (TWIN_NOTES §1.10).
SEED_LEADS = 40_000
SEED_USERS = 2_000
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# Each slow network step of a cold build gets this many tries, each bounded: a
# build that cannot reach the mirror fails with the reason within
# BUILD_TRIES * (DEBOOTSTRAP_TIMEOUT + APT_TIMEOUT), never hangs a CI run.
BUILD_TRIES = 2
DEBOOTSTRAP_TIMEOUT = 900.0
APT_TIMEOUT = 600.0
TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


@dataclass(frozen=True)
class Layers:
    os: Path
    app: Path
    os_key: str
    app_key: str


def _hash_tree(h: Any, root: Path) -> None:
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and "__pycache__" not in rel.parts and p.suffix != ".pyc":
            h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")


def _week() -> str:
    y, w, _ = datetime.now(UTC).isocalendar()
    return f"{y}w{w:02d}"


def os_key() -> str:
    h = hashlib.sha256()
    h.update((twin_files() / "os-packages.sh").read_bytes())
    h.update(DEBOOTSTRAP_INCLUDE.encode() + SUITE.encode())
    if APT_SOURCES.exists():
        h.update(APT_SOURCES.read_bytes())
    h.update(_week().encode())
    return h.hexdigest()[:16]


def app_key(os_k: str) -> str:
    h = hashlib.sha256(os_k.encode())
    _hash_tree(h, project_root() / "sandbox" / "app")
    _hash_tree(h, twin_files())
    h.update(f"{SEED_LEADS}/{SEED_USERS}".encode())
    h.update((Path(sb_seed.__file__)).read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_layers(echo: Echo = print) -> Layers:
    """The unpacked OS and app layers, built or unpacked as needed (idempotent)."""
    cache = twin_cache_dir()
    ok, ak = os_key(), ""
    with _cache_lock(cache):
        os_dir = _ensure_layer(cache, "os", ok, echo, lambda d: build_os(d, cache, echo))
        ak = app_key(ok)
        app_dir = _ensure_layer(cache, "app", ak, echo, lambda d: build_app(d, os_dir, cache, echo))
    return Layers(os_dir, app_dir, ok, ak)


def _ensure_layer(cache: Path, kind: str, key: str, echo: Echo, build_fn: Any) -> Path:
    d = cache / f"{kind}-{key}"
    tarball = cache / f"{kind}-{key}.tar.zst"
    if (d / ".complete").exists():
        return d
    if d.exists():
        shutil.rmtree(d)
    t0 = time.monotonic()
    if tarball.exists():
        d.mkdir(parents=True)
        run(["tar", *TAR_FLAGS, "-I", "zstd", "-xpf", str(tarball), "-C", str(d)], f"unpack {kind}")
        echo(f"  {kind} layer  unpacked from {tarball.name} in {time.monotonic() - t0:.1f} s")
    else:
        echo(f"  {kind} layer  building {kind}-{key} (not cached)")
        build_fn(d)
        t1 = time.monotonic()
        tmp = tarball.with_suffix(".part")
        run(
            ["tar", *TAR_FLAGS, "-I", "zstd -3 -T0", "-cf", str(tmp), "-C", str(d), "."],
            f"pack {kind}",
        )
        tmp.replace(tarball)
        echo(
            f"  {kind} layer  built in {t1 - t0:.1f} s, packed in {time.monotonic() - t1:.1f} s "
            f"({tarball.stat().st_size / 2**20:.0f} MiB)"
        )
    (d / ".complete").write_text(json.dumps({"key": key, "at": time.time()}))
    _prune(cache, kind, key)
    return d


def _prune(cache: Path, kind: str, keep: str) -> None:
    """Older layers of the same kind go (each is hundreds of MB)."""
    for p in cache.glob(f"{kind}-*"):
        if keep in p.name or p.name.endswith(".lock"):
            continue
        if p.is_dir():
            if not _any_mount_uses(p):
                shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _any_mount_uses(path: Path) -> bool:
    with open("/proc/mounts") as fh:
        return str(path) in fh.read()


# -------------------------------------------------------------------- OS layer


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (debootstrap must use the same)."""
    if APT_SOURCES.exists():
        for line in APT_SOURCES.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def build_os(dest: Path, cache: Path, echo: Echo) -> None:
    log = cache / "build-os.log"
    log.write_text("")
    tmp = dest.with_name(dest.name + ".tmp")
    done = tmp / ".debootstrapped"
    t0 = time.monotonic()
    # debootstrap is the slow part (the mirror); a finished one survives a failed apt step
    if not done.exists():
        # the packages it fetched survive a failed try (--cache-dir): a retry after a
        # slow or broken mirror fetches only what is missing
        debs = cache / "debootstrap-debs"
        debs.mkdir(exist_ok=True)
        for attempt in range(1, BUILD_TRIES + 1):
            if tmp.exists():
                shutil.rmtree(tmp)
            try:
                run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        f"--include={DEBOOTSTRAP_INCLUDE}",
                        f"--cache-dir={debs}",
                        SUITE,
                        str(tmp),
                        apt_mirror(),
                    ],
                    "debootstrap",
                    log=log,
                    timeout=DEBOOTSTRAP_TIMEOUT,
                )
                break
            except TwinError as exc:
                if attempt == BUILD_TRIES:
                    raise TwinError(
                        "debootstrap",
                        f"failed {BUILD_TRIES} times from {apt_mirror()} (log: {log}); check "
                        "that this machine reaches its Debian mirror (`apt-get update`), then "
                        "run `runbook twin up` again",
                        log_tail=exc.log_tail,
                    ) from exc
                echo(f"    debootstrap try {attempt} failed ({exc.args[0][:160]}); retrying")
        shutil.rmtree(debs, ignore_errors=True)
        done.write_text("")
    echo(f"    debootstrap {time.monotonic() - t0:.1f} s")
    if APT_SOURCES.exists():
        shutil.copy(APT_SOURCES, tmp / "etc/apt/sources.list.d/debian.sources")
        (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
    shutil.copy(twin_files() / "os-packages.sh", tmp / "root/os-packages.sh")
    t1 = time.monotonic()
    args = [
        "-q",
        "-D",
        str(tmp),
        "-M",
        "twin-build-os",
        "--register=no",
        "--keep-unit",
        "--timezone=off",
        "--resolv-conf=copy-host",
    ]
    # The host's apt settings (e.g. Check-Valid-Until for a snapshot mirror) for this
    # build only, through APT_CONFIG: the image keeps Debian's own apt.conf.d (which
    # package scripts write to, so it must stay writable).
    host_conf = "".join(
        p.read_text(errors="replace") + "\n"
        for p in sorted(Path("/etc/apt/apt.conf.d").glob("*"))
        if p.is_file()
    )
    # apt's own retries and a timeout per connection: a stalled mirror fails the
    # download (and the try) instead of hanging the build
    host_conf += 'Acquire::Retries "5";\nAcquire::http::Timeout "60";\n'
    (tmp / "root/host-apt.conf").write_text(host_conf)
    args += ["-E", "APT_CONFIG=/root/host-apt.conf"]
    for attempt in range(1, BUILD_TRIES + 1):
        try:
            # os-packages.sh starts with `dpkg --configure -a`: a retry finishes a
            # half-done try
            run(
                nspawn_argv("build-os", [*args, "/bin/sh", "/root/os-packages.sh"]),
                "apt in nspawn",
                log=log,
                timeout=APT_TIMEOUT,
            )
            break
        except TwinError as exc:
            if attempt == BUILD_TRIES:
                raise
            echo(f"    apt try {attempt} failed ({exc.args[0][:160]}); retrying")
        finally:
            remove_cgroups("build-os")
    (tmp / "root/os-packages.sh").unlink()
    (tmp / "root/host-apt.conf").unlink()
    done.unlink()
    echo(f"    apt         {time.monotonic() - t1:.1f} s")
    tmp.rename(dest)


# -------------------------------------------------------------------- app layer


def copy_value(v: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        v = v.isoformat()
    s = str(v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_seed(dest: Path, now: datetime) -> None:
    """The sandbox's seed (same generator, production-like size) as COPY files, one per
    phase, with the nightly dump that follows each phase (seed.seed_and_backup's order)."""
    dest.mkdir(parents=True, exist_ok=True)
    data = sb_seed.generate(now, leads=SEED_LEADS, users=SEED_USERS)
    phases: list[tuple[datetime | None, datetime, str]] = []
    lo: datetime | None = None
    for t in sb_seed.dump_times(now):
        phases.append((lo, t, sb_seed.backup_name(t.date())))
        lo = t
    phases.append((lo, now, "-"))
    lines = []
    for i, (lo, hi, dump) in enumerate(phases):
        out = [f"-- phase {i}: rows created after {lo} up to {hi}"]
        for table in sb_seed._ORDER:
            col = sb_seed._TIME_COLUMN.get(table, "created_at")
            chunk = [r for r in data.get(table, []) if (lo is None or r[col] > lo) and r[col] <= hi]
            if not chunk:
                continue
            columns = [c for c in chunk[0] if table != "pricing_plans" or c != "created_at"]
            out.append(f"COPY {table} ({', '.join(columns)}) FROM stdin;")
            out.extend("\t".join(copy_value(r[c]) for c in columns) for r in chunk)
            out.append("\\.")
            # table names come from the seed's own _ORDER, never from input
            out.append(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT max(id) FROM {table}));"
            )
        (dest / f"phase-{i}.sql").write_text("\n".join(out) + "\n")
        epoch = int(hi.timestamp())
        lines.append(f"phase-{i}.sql {dump} {epoch}")
    (dest / "phases.txt").write_text("\n".join(lines) + "\n")


def download_wheels(dest: Path, log: Path) -> None:
    """The app's requirements as wheels for the build container, which installs offline."""
    req = project_root() / "sandbox" / "app" / "requirements.txt"
    pip_download([req, twin_files() / "wheels-extra.txt"], dest, "pip download", log, timeout=600)


def app_env_files(dest: Path) -> None:
    """.env and .env.pre-v3.0.0.bak of the app layer. The secrets in them are build-time
    placeholders: `runbook twin up` writes fresh ones into each instance."""
    sec = generate_secrets()
    env = twin_app_env(
        sec,
        db_password=secrets.token_urlsafe(24),
        sentry_public_key=secrets.token_hex(16),
        sentry_project_id="1",
    )
    dest.mkdir(parents=True, exist_ok=True)
    write_env_file(
        dest / "dotenv",
        env,
        header=(
            "Dealix API configuration (production twin). Never edit on the server:\n"
            "changes flow through GitHub PR -> deploy script."
        ),
    )
    old = {
        k: v
        for k, v in env.items()
        if not k.startswith(("BREAKER_", "LLM_", "WORKLOAD_", "POSTHOG_", "APP_VERSION"))
    }
    old.update(
        {
            "ADMIN_KEY": "dlx_admin_" + secrets.token_urlsafe(32),
            "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_urlsafe(70),
            "OPENAI_API_KEY": "sk-" + secrets.token_urlsafe(36),
        }
    )
    old.pop("GOOGLE_API_KEY", None)
    write_env_file(
        dest / "dotenv-pre-v3",
        old,
        header=(
            "Backup taken 2026-04-23 08:44:42 before the v3.0.0 launch.\n"
            "Emergency reference: never delete."
        ),
    )


def twin_app_env(
    sec: dict[str, str], *, db_password: str, sentry_public_key: str, sentry_project_id: str
) -> dict[str, str]:
    """The app's .env on the twin: production's shape (real SaaS hostnames, which the
    twin resolves to the "internet" container); only the secrets are the twin's own."""
    return {
        "APP_ENV": "production",
        "APP_VERSION": "3.0.0",
        "DATABASE_URL": f"postgresql://dealix:{db_password}@127.0.0.1:5432/dealix",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ADMIN_KEY": sec["DEALIX_ADMIN_KEY"],
        "WEBHOOK_SECRET": sec["DEALIX_WEBHOOK_SECRET"],
        "ANTHROPIC_API_KEY": sec["ANTHROPIC_API_KEY"],
        "OPENAI_API_KEY": sec["OPENAI_API_KEY"],
        "GOOGLE_API_KEY": sec["GOOGLE_API_KEY"],
        "LLM_PROVIDER_PRIORITY": "anthropic,openai,google",
        "BREAKER_FAILURE_THRESHOLD": "3",
        # as the sandbox: production waits 60 s before a half-open probe; drills cannot
        "BREAKER_RESET_SECONDS": "3",
        "WORKLOAD_INTERVAL_SECONDS": "2",
        "SENTRY_DSN": f"https://{sentry_public_key}@sentry.io/{sentry_project_id}",
        "POSTHOG_API_KEY": sec["POSTHOG_PROJECT_API_KEY"],
        "POSTHOG_HOST": "https://eu.i.posthog.com",
    }


def build_app(dest: Path, os_dir: Path, cache: Path, echo: Echo) -> None:
    log = cache / "build-app.log"
    log.write_text("")
    work = dest.with_name(dest.name + ".tmp")
    if work.exists():
        _umount(work / "merged")
        shutil.rmtree(work)
    upper, ovl_work, merged, inputs = (work / n for n in ("upper", "work", "merged", "inputs"))
    for d in (upper, ovl_work, merged, inputs):
        d.mkdir(parents=True)
    t0 = time.monotonic()
    # The app's git history exactly as the sandbox builds it (same commits, dates
    # and backup branch), so every scenario sees the same repository.
    lay = Layout(work / "repo-build")
    build_app_repo(lay)
    (inputs / "repo").mkdir()
    shutil.copytree(lay.origin_dir, inputs / "repo" / "origin.git", symlinks=True)
    shutil.copytree(lay.app_dir, inputs / "repo" / "clone", symlinks=True)
    shutil.rmtree(lay.root)
    download_wheels(inputs / "wheels", log)
    write_seed(inputs / "seed", datetime.now(UTC))
    app_env_files(inputs / "env")
    shutil.copytree(twin_files(), inputs / "twin")
    echo(f"    inputs      {time.monotonic() - t0:.1f} s (repo, wheels, seed)")
    t1 = time.monotonic()
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={os_dir},upperdir={upper},workdir={ovl_work}",
            str(merged),
        ],
        "overlay",
    )
    try:
        run(
            nspawn_argv(
                "build-app",
                [
                    "-q",
                    "-D",
                    str(merged),
                    "-M",
                    "twin-build-app",
                    "--register=no",
                    "--keep-unit",
                    "--timezone=off",
                    "--resolv-conf=off",
                    "--private-network",
                    f"--bind-ro={inputs}:/run/twin-build",
                    "/bin/sh",
                    "/run/twin-build/twin/provision-app.sh",
                ],
            ),
            "provision-app in nspawn",
            log=log,
            timeout=900,
        )
    finally:
        _umount(merged)
        remove_cgroups("build-app")
    echo(f"    provision   {time.monotonic() - t1:.1f} s")
    upper.rename(dest)
    shutil.rmtree(work)


def _umount(path: Path) -> None:
    if mounted(path):
        proc = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
