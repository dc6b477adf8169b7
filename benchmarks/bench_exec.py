"""Execution core vs its peers, measured in the same run against the sandbox's sshd.

    scripts/bench.sh exec            # or: .venv/bin/python benchmarks/bench_exec.py

Prints medians and ratios (never absolute targets on their own: the machine's
load moves all peers together):

- latency of `true`: this library (one reused connection) vs a fresh `ssh`
  process per command vs OpenSSH with ControlMaster vs Fabric's Connection.run
  (targets: ≤ 0.5x ControlMaster, ≥ 20x better than fresh ssh);
- throughput streaming N MB of output: this library vs `ssh host cat`
  (target ≥ 0.8x), and the library's peak memory growth (target < 50 MB);
- size of the executed notebook that streamed that output (target < 1 MB).
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


def median_ms(fn, n: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def ssh_base(st: dict) -> list[str]:
    return [
        "ssh",
        "-p",
        str(st["ssh_port"]),
        "-i",
        st["ssh_key"],
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={st['known_hosts']}",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        f"{st['ssh_user']}@{st['ssh_host']}",
    ]


def latency(st: dict, n: int) -> dict[str, float]:
    from runbook import open_session

    res: dict[str, float] = {}
    s = open_session("bench", env="sandbox", run_dir=tempfile.mkdtemp(prefix="rb-bench-"))
    res["runbook (reused connection)"] = median_ms(lambda: s.probe(["true"]), n)
    s.close()

    base = ssh_base(st)
    res["fresh ssh per command"] = median_ms(
        lambda: subprocess.run([*base, "true"], check=True), max(5, n // 5)
    )

    ctl = tempfile.mkdtemp(prefix="rbcm-")
    cm = [base[0], "-o", f"ControlPath={ctl}/cm", *base[1:]]
    master = subprocess.Popen(
        [cm[0], "-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N", *cm[1:]]
    )
    for _ in range(50):
        if Path(f"{ctl}/cm").exists():
            break
        time.sleep(0.1)
    res["OpenSSH ControlMaster"] = median_ms(lambda: subprocess.run([*cm, "true"], check=True), n)
    master.terminate()
    master.wait()
    shutil.rmtree(ctl, ignore_errors=True)

    try:
        from fabric import Connection
    except ImportError:
        print("  (fabric not installed: pip install -e '.[bench]')")
    else:
        c = Connection(
            st["ssh_host"],
            user=st["ssh_user"],
            port=int(st["ssh_port"]),
            connect_kwargs={
                "key_filename": st["ssh_key"],
                "allow_agent": False,
                "look_for_keys": False,
            },
        )
        res["Fabric Connection.run"] = median_ms(lambda: c.run("true", hide=True), n)
        c.close()
    return res


STREAM_CHILD = r"""
import json, shutil, sys, time, tempfile
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
from runbook import open_session
run_dir = tempfile.mkdtemp(prefix='rb-bench-')
s = open_session('bench', env='sandbox', run_dir=run_dir)
s.probe(['true'])
before = hwm()
t0 = time.perf_counter()
r = s.probe(['sh', '-c', f'yes "abcdefghijklmnopqrstuvwxyz0123456789 some log line text" | head -c {int(sys.argv[1])}'])
dt = time.perf_counter() - t0
s.close()
# the full log is 200 MB: leaving it would fill /tmp and slow the next rounds
shutil.rmtree(run_dir)
print(json.dumps({'seconds': dt, 'bytes': r.stdout_bytes, 'hwm_growth': hwm() - before, 'shown': len(r.stdout)}))
"""


def throughput(st: dict, mb: int, rounds: int = 5) -> dict[str, float]:
    """Medians over `rounds`, the two sides interleaved so that load hits both."""
    size = mb * 1024 * 1024
    cmd = f'yes "abcdefghijklmnopqrstuvwxyz0123456789 some log line text" | head -c {size}'
    mine, raw, growth = [], [], []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", STREAM_CHILD, str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        lib = json.loads(out.stdout.strip().splitlines()[-1])
        mine.append(mb / lib["seconds"])
        growth.append(lib["hwm_growth"] / 1e6)
        t0 = time.perf_counter()
        with open(os.devnull, "wb") as devnull:
            subprocess.run([*ssh_base(st), cmd], stdout=devnull, check=True)
        raw.append(mb / (time.perf_counter() - t0))
    return {
        "runbook MB/s": statistics.median(mine),
        "ssh cat MB/s": statistics.median(raw),
        "peak memory growth MB": max(growth),
    }


def notebook_size(mb: int) -> int:
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "dealix-runbook",
        "display_name": "Dealix runbook",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("mb = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from runbook import open_session\n"
            "s = open_session('bench', env='sandbox')\n"
            "r = s.probe(['sh', '-c', f'seq 1 100000000 | head -c {mb * 1048576}'])\n"
            "print(r.stdout)\nr"
        ),
    ]
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.ipynb", Path(d) / "out.ipynb"
        nbformat.write(nb, src)
        os.environ.setdefault("RUNBOOK_OUTPUTS", str(Path(d) / "outputs"))
        from traitlets.config import Config

        papermill.execute_notebook(
            str(src),
            str(dst),
            parameters={"mb": mb},
            kernel_name="dealix-runbook",
            progress_bar=False,
            log_output=False,
            config=Config({"KernelManager": {"transport": "ipc"}}),
        )
        return dst.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50, help="samples for latency medians")
    ap.add_argument("--mb", type=int, default=200, help="MB of output to stream")
    ap.add_argument("--rounds", type=int, default=5, help="rounds for the throughput medians")
    args = ap.parse_args()
    from runbook.core.profile import sandbox_state

    st = sandbox_state()
    print(
        f"execution core benchmark against sshd {st['ssh_host']}:{st['ssh_port']} ({os.cpu_count()} cores)"
    )
    print("\nlatency of `true` (median ms)")
    lat = latency(st, args.n)
    mine = lat["runbook (reused connection)"]
    for k, v in lat.items():
        print(f"  {k:32s} {v:8.2f} ms   {v / mine:6.1f}x runbook")
    cm = lat["OpenSSH ControlMaster"]
    fresh = lat["fresh ssh per command"]
    print(
        f"  target: runbook <= 0.5x ControlMaster: {mine / cm:.2f}x  -> {'MET' if mine <= cm / 2 else 'NOT MET'}"
    )
    print(
        f"  target: >= 20x better than fresh ssh:  {fresh / mine:.1f}x -> {'MET' if fresh / mine >= 20 else 'NOT MET'}"
    )
    print(
        f"\nstreaming {args.mb} MB of output (median of {args.rounds} rounds, peak memory the worst)"
    )
    tp = throughput(st, args.mb, args.rounds)
    ratio = tp["runbook MB/s"] / tp["ssh cat MB/s"]
    print(
        f"  runbook {tp['runbook MB/s']:.1f} MB/s, ssh cat {tp['ssh cat MB/s']:.1f} MB/s: ratio {ratio:.2f} -> {'MET' if ratio >= 0.8 else 'NOT MET'} (target >= 0.8)"
    )
    growth = tp["peak memory growth MB"]
    print(
        f"  peak memory growth {growth:.1f} MB -> {'MET' if growth < 50 else 'NOT MET'} (target < 50 MB)"
    )
    size = notebook_size(args.mb)
    print(
        f"  executed notebook that streamed {args.mb} MB: {size / 1024:.1f} KB -> {'MET' if size < 1024 * 1024 else 'NOT MET'} (target < 1 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
