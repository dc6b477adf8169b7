"""`runbook history` over 1,000 generated records (target: under 2 s).

    .venv/bin/python benchmarks/bench_history.py [--runs 1000] [--repeat 5]

Writes N records shaped like runbook's (steps, checks, metrics) into a temp
outputs folder, then times, as medians:

- `history.load()` in process (what the number of records costs);
- the `runbook history` command end to end (a fresh interpreter, pandas import,
  table output), which is what the auditor waits for;
- `runbook history --plot` (matplotlib, Agg).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def generate(root: Path, n: int) -> None:
    scenarios = ("restore_drill", "rollback", "health_check", "deploy", "database_down")
    for i in range(n):
        scenario = scenarios[i % len(scenarios)]
        env = ("sandbox", "staging", "production")[i % 3]
        day = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.000Z"
        run_dir = root / env / scenario / f"{day[:10].replace('-', '')}T{i:06d}Z-{scenario}"
        run_dir.mkdir(parents=True)
        steps = [
            {
                "name": f"{k}. Step {k}",
                "started": day,
                "finished": day,
                "duration_s": 1.5 * k,
                "status": "ok",
                "error": None,
            }
            for k in range(1, 9)
        ]
        checks = [
            {
                "name": f"Check {k}",
                "expected": "200 OK",
                "actual": "200",
                "passed": True,
                "status": "passed",
                "note": "",
                "step": steps[k]["name"],
                "at": day,
            }
            for k in range(6)
        ]
        metrics = {}
        if scenario == "restore_drill":
            metrics = {
                "restore_minutes": {"value": 4 + i % 15, "unit": "min", "target": 15},
                "data_age_hours": {"value": 1 + i % 28, "unit": "h", "target": 24},
            }
        if scenario == "rollback":
            checks.append(
                {
                    "name": "Time to rollback",
                    "expected": "< 5 min",
                    "actual": f"{40 + i % 300} s",
                    "status": "passed",
                }
            )
        record = {
            "schema": "runbook.record/1",
            "scenario": scenario,
            "environment": env,
            "operator": "oncall",
            "started": day,
            "outcome": "ok" if i % 9 else "dod_not_met",
            "exit_code": 0 if i % 9 else 3,
            "failed_step": None,
            "steps": steps,
            "checks": checks,
            "metrics": metrics,
            "changes": [],
            "runner": {"duration_s": 20.0 + i % 50},
        }
        (run_dir / "record.json").write_text(json.dumps(record, indent=2))
        # a notebook the history must NOT read
        (run_dir / f"{scenario}.ipynb").write_text("{}" + " " * 200_000)


def median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from runbook.evidence import history

    tmp = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        root = tmp / "outputs"
        t0 = time.perf_counter()
        generate(root, args.runs)
        print(f"generated {args.runs} records in {time.perf_counter() - t0:.1f} s under {root}")
        history.load(root)  # warm the page cache, as on a server that keeps its outputs
        df = history.load(root)
        assert len(df) == args.runs, len(df)
        t_load = median(lambda: history.load(root), args.repeat)
        cli = [str(ROOT / ".venv/bin/runbook"), "history", "--outputs", str(root)]
        env = {**os.environ, "RUNBOOK_OUTPUTS": str(root)}

        def run_cli(*extra: str) -> None:
            subprocess.run([*cli, *extra], check=True, capture_output=True, env=env)

        t_cli = median(run_cli, args.repeat)
        t_json = median(lambda: run_cli("--format", "json"), args.repeat)
        t_plot = median(lambda: run_cli("--plot", str(tmp / "h.png")), max(1, args.repeat // 2))
        t_import = median(
            lambda: subprocess.run(
                [sys.executable, "-c", "import pandas"], check=True, capture_output=True
            ),
            args.repeat,
        )
        print(f"history.load() in process:          {t_load * 1000:7.0f} ms  ({args.runs} records)")
        print(f"`runbook history` (table), end to end: {t_cli * 1000:7.0f} ms  (target < 2000 ms)")
        print(f"`runbook history --format json`:     {t_json * 1000:7.0f} ms")
        print(f"`runbook history --plot FILE`:       {t_plot * 1000:7.0f} ms")
        print(f"of which a bare `import pandas`:     {t_import * 1000:7.0f} ms")
        print("PASS" if t_cli < 2.0 else "FAIL: over 2 s")
        return 0 if t_cli < 2.0 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
