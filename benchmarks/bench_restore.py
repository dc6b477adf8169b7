"""The drill's restore vs the bare pipeline, on the same ≥ 1 GB database, in the same run.

    scripts/bench.sh restore                    # 1100 MB (a database above 1 GiB), one round
    .venv/bin/python benchmarks/bench_restore.py --size-mb 256 --rounds 2 --keep

Against the sandbox's PostgreSQL (`runbook sandbox up` first; honours
$RUNBOOK_SANDBOX_DIR). It builds `bench_src` (four leads-like tables, about
--size-mb MB in all, each with a primary key and an index), dumps it the way the nightly job does
(`pg_dump | gzip -6`) and in custom format (`pg_dump -Fc`), then restores
into a fresh `bench_dst` each time:

- bare:        `gunzip -c dump | psql bench_dst`, the runbook's command, run directly;
- bare+flags:  the same with the drill's flags (`-X -q -v ON_ERROR_STOP=1 --single-transaction`);
- drill:       `runbook.scenarios.backups.restore()` through the SSH session, with its progress polling;
- pg_restore:  `runbook.scenarios.backups.restore()` of the custom-format dump with `-j 2`.

Prints each time and the ratios (baseline time / time: > 1 is faster):
drill vs bare+flags (target ≥ 0.95: the notebook adds no meaningful cost),
drill vs bare, and pg_restore -j2 vs bare (published: about 1.5x on 2 cores).
"""

# ruff: noqa: S608 - fixed benchmark SQL, no input
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from runbook import open_session
from runbook.core.profile import sandbox_state
from runbook.ops import backups

SRC, DST = "bench_src", "bench_dst"
TABLES = ("leads", "lead_notes", "llm_calls", "webhook_events")
BYTES_PER_ROW = 230  # heap, primary key and one index, measured on PostgreSQL 15


def sh(cmd: str, timeout: float = 3600) -> float:
    """Run a shell command on the sandbox host; seconds it took (raises on failure)."""
    t0 = time.perf_counter()
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {cmd}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 1100, not 1024: BYTES_PER_ROW is an estimate, and 1024 built a 984 MiB database;
    # the issue asks for >= 1 GB, so the default leaves a margin and the run says so
    ap.add_argument("--size-mb", type=int, default=1100, help="size of bench_src (default 1100)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the four restores")
    ap.add_argument("--jobs", type=int, default=2, help="pg_restore -j (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep bench_src and the dumps")
    ap.add_argument("--rebuild", action="store_true", help="rebuild a kept bench_src")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()

    state = sandbox_state()
    psql = state["psql"]
    bindir = state["pg_bindir"]
    conn = f"-h {shlex.quote(state['pg_socket_dir'])} -p {state['pg_port']}"
    pg_dump = f"runuser -u postgres -- {bindir}/pg_dump {conn}"
    if os.geteuid() != 0:
        pg_dump = f"{bindir}/pg_dump {conn}"
    work = Path(state["backups_dir"]).parent / "bench-restore"
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # pg_restore runs as postgres and opens the dump itself
    plain, custom = work / "bench-src.sql.gz", work / "bench-src.dump"

    def q(sql: str, db: str = "postgres") -> str:
        return subprocess.run(
            ["bash", "-c", f"{psql} -X -At -d {db} -c {shlex.quote(sql)}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    have = q(f"SELECT count(*) FROM pg_database WHERE datname = '{SRC}'") == "1"
    if args.rebuild or not (have and plain.exists() and custom.exists()):
        rows = args.size_mb * 1024 * 1024 // BYTES_PER_ROW
        print(f"building {SRC}: {rows:,} rows (~{args.size_mb} MB) …", flush=True)
        sh(
            f"{psql} -X -q -d postgres -c 'DROP DATABASE IF EXISTS {SRC}' -c 'CREATE DATABASE {SRC}'"
        )
        # four tables shaped like the app's, each with a primary key and a
        # secondary index: what pg_restore -j can spread over its workers
        per = rows // len(TABLES)
        sql = "".join(
            f"CREATE TABLE {name} (id bigint PRIMARY KEY, company text, email text, "
            "note text, score int, created_at timestamptz NOT NULL);"
            f"INSERT INTO {name} SELECT g, 'Company ' || (g % 50000), "
            f"md5((g + {i})::text) || '@example.com', repeat(md5((g * 7 + {i})::text), 2), "
            f"g % 100, now() - make_interval(secs => g) FROM generate_series(1, {per}) g;"
            f"CREATE INDEX ON {name} (created_at);"
            for i, name in enumerate(TABLES)
        )
        t = sh(f"{psql} -X -q -v ON_ERROR_STOP=1 -d {SRC} -c " + shlex.quote(sql))
        print(f"  generated in {t:.1f} s", flush=True)
        t = sh(f"{pg_dump} {SRC} | gzip -6 > {plain}.part && mv {plain}.part {plain}")
        print(f"  pg_dump | gzip -6 in {t:.1f} s", flush=True)
        t = sh(f"{pg_dump} -Fc {SRC} > {custom}.part && mv {custom}.part {custom}")
        print(f"  pg_dump -Fc in {t:.1f} s", flush=True)
        plain.chmod(0o644)
        custom.chmod(0o644)
    db_bytes = int(q(f"SELECT pg_database_size('{SRC}')"))
    if db_bytes < 2**30:
        print(
            f"note: {SRC} is {db_bytes / 2**20:.0f} MiB, below 1 GiB: raise --size-mb", flush=True
        )
    print(
        f"{SRC}: {db_bytes / 2**20:.0f} MiB; {plain.name} {plain.stat().st_size / 2**20:.0f} MiB; "
        f"{custom.name} {custom.stat().st_size / 2**20:.0f} MiB; cores {os.cpu_count()}",
        flush=True,
    )

    s = open_session("bench_restore", env="sandbox", run_dir=tempfile.mkdtemp(prefix="rb-bench-"))

    def fresh_dst() -> None:
        sh(f"{psql} -X -q -d postgres -c 'DROP DATABASE IF EXISTS {DST} WITH (FORCE)'")
        sh(f"{psql} -X -q -d postgres -c 'CREATE DATABASE {DST}'")
        sh("sync")

    def chosen(path: Path, fmt: str) -> dict:
        return {
            "name": path.name,
            "path": str(path),
            "format": fmt,
            "size_bytes": path.stat().st_size,
        }

    def bare() -> float:
        return sh(f"gunzip -c {plain} | {psql} {DST} > /dev/null")

    def bare_flags() -> float:
        return sh(
            f"gunzip -c {plain} | {psql} -X -q -v ON_ERROR_STOP=1 --single-transaction -d {DST}"
        )

    def drill() -> float:
        r = backups.restore(s, chosen(plain, backups.PLAIN), DST, interval=5)
        if not r.ok:
            raise SystemExit(f"drill restore failed: {r.error}")
        return r.duration_s

    def pg_restore() -> float:
        r = backups.restore(s, chosen(custom, backups.CUSTOM), DST, jobs=args.jobs, interval=5)
        if not r.ok:
            raise SystemExit(f"pg_restore failed: {r.error}")
        return r.duration_s

    runs: dict[str, list[float]] = {"bare": [], "bare+flags": [], "drill": [], "pg_restore": []}
    fns = {"bare": bare, "bare+flags": bare_flags, "drill": drill, "pg_restore": pg_restore}
    try:
        for i in range(args.rounds):
            # rotate the order each round so no variant always runs on a warm cache
            names = list(fns)[i % 4 :] + list(fns)[: i % 4]
            for name in names:
                fresh_dst()
                t = fns[name]()
                check = q(
                    " + ".join(f"(SELECT count(*) FROM {n})" for n in TABLES).join(["SELECT ", ""]),
                    DST,
                )
                runs[name].append(t)
                print(f"round {i + 1} {name:<11} {t:7.1f} s  ({check} rows)", flush=True)
    finally:
        sh(f"{psql} -X -q -d postgres -c 'DROP DATABASE IF EXISTS {DST} WITH (FORCE)'")
        if not args.keep:
            sh(f"{psql} -X -q -d postgres -c 'DROP DATABASE IF EXISTS {SRC} WITH (FORCE)'")
            for f in (plain, custom):
                f.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                work.rmdir()
        s.close()

    med = {k: statistics.median(v) for k, v in runs.items()}

    def paired(base: str, other: str) -> float:
        return statistics.median(b / o for b, o in zip(runs[base], runs[other], strict=True))

    result = {
        "db_mib": round(db_bytes / 2**20),
        "db_at_least_1_gib": db_bytes >= 2**30,
        "plain_dump_mib": round(plain.stat().st_size / 2**20) if plain.exists() else None,
        "rounds": args.rounds,
        "jobs": args.jobs,
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "ratio_drill_vs_bare_flags": round(med["bare+flags"] / med["drill"], 3),
        "ratio_drill_vs_bare": round(med["bare"] / med["drill"], 3),
        "ratio_pg_restore_vs_bare": round(med["bare"] / med["pg_restore"], 3),
        "ratio_pg_restore_vs_bare_flags": round(med["bare+flags"] / med["pg_restore"], 3),
        # the same ratios round by round (each round runs all four back to
        # back), whose median resists a neighbour's load burst better
        "paired_drill_vs_bare_flags": round(paired("bare+flags", "drill"), 3),
        "paired_pg_restore_vs_bare": round(paired("bare", "pg_restore"), 3),
        "runs_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
    }
    print()
    print(
        f"database {result['db_mib']} MiB ({'>=' if result['db_at_least_1_gib'] else 'BELOW'} "
        f"1 GiB), {args.rounds} round(s), medians:"
    )
    for k, v in med.items():
        print(f"  {k:<11} {v:7.1f} s")
    print(
        f"drill vs bare+flags: {result['ratio_drill_vs_bare_flags']:.3f} (target >= 0.95)\n"
        f"drill vs bare:       {result['ratio_drill_vs_bare']:.3f}\n"
        f"pg_restore -j{args.jobs} vs bare: {result['ratio_pg_restore_vs_bare']:.3f} "
        "(published: about 1.5 on 2 cores)\n"
        f"pg_restore -j{args.jobs} vs bare+flags: {result['ratio_pg_restore_vs_bare_flags']:.3f}\n"
        f"round-by-round medians: drill vs bare+flags {result['paired_drill_vs_bare_flags']:.3f}, "
        f"pg_restore -j{args.jobs} vs bare {result['paired_pg_restore_vs_bare']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
