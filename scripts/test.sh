#!/usr/bin/env bash
# Set everything up and run the whole test suite (the sandbox comes up once
# per test session and goes down at the end). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "test: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$code"
