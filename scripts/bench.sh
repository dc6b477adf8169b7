#!/usr/bin/env bash
# Run the benchmarks against the sandbox: scripts/bench.sh [exec] [args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pip install -q -e '.[sandbox,test,dev,bench]'
.venv/bin/runbook sandbox up
which="${1:-exec}"; shift || true
exec .venv/bin/python "benchmarks/bench_${which}.py" "$@"
