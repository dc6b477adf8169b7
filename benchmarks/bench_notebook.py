"""What the notebook machinery costs: `runbook run health_check` vs the same checks
as a plain Python script, measured in the same run against the same sandbox.

    .venv/bin/runbook sandbox up
    .venv/bin/python benchmarks/bench_notebook.py [--repeat 5]

Both sides are fresh processes doing the same work (open a session, every
appendix-A signal, the definition of done, record.json). The notebook side
adds papermill, the kernel's start and its imports, saving the notebook, and
sealing the folder (secret scan, HTML, manifest, chain). Target: under 1.5 s
extra (the issue's figure, mostly kernel start). Prints medians and the split.
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
PLAIN = """
from runbook import open_session
from runbook.scenarios.health_check import HealthCheck
s = open_session("health_check", env="sandbox")
HealthCheck(s).check_all()
s.done()
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-notebook-"))
    env = {**os.environ, "RUNBOOK_OUTPUTS": str(tmp / "outputs")}
    py = str(ROOT / ".venv/bin/python")
    runbook = str(ROOT / ".venv/bin/runbook")
    try:
        timed([py, "-c", PLAIN], env)  # warm caches on both sides
        timed([runbook, "run", "health_check"], env)
        plain, nb = [], []
        for _ in range(args.repeat):
            # interleaved, so that the machine's load hits both alike
            plain.append(timed([py, "-c", PLAIN], env))
            nb.append(timed([runbook, "run", "health_check"], env))
        records = [
            json.loads(p.read_text())
            for p in (tmp / "outputs" / "sandbox" / "health_check").glob("*/record.json")
        ]
        # only `runbook run` writes "runner"; the plain script's records have none
        papermill = [r["runner"]["duration_s"] for r in records if "runner" in r]
        sessions = [r["duration_s"] for r in records if "runner" in r]
        p_med, n_med = statistics.median(plain), statistics.median(nb)
        extra = n_med - p_med
        print(f"plain script (same checks):      {p_med:6.2f} s  median of {args.repeat}")
        print(f"runbook run health_check:        {n_med:6.2f} s")
        print(f"  of which papermill execution:  {statistics.median(papermill):6.2f} s")
        print(f"  of which the session's cells:  {statistics.median(sessions):6.2f} s")
        print(
            "  the rest (interpreter, parameter validation, sealing: scan, HTML, manifest): "
            f"{n_med - statistics.median(papermill):.2f} s"
        )
        print(f"extra cost of the notebook:      {extra:6.2f} s  (target < 1.5 s)")
        print("PASS" if extra < 1.5 else "OVER TARGET")
        return 0 if extra < 1.5 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
