#!/usr/bin/env bash
# Set everything up and run the whole test suite (the sandbox comes up once
# per test session and goes down at the end). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# CI runs as root: there the isolated sandbox (network namespaces, a real
# firewall, fail2ban) and the production twin (systemd-nspawn) must run, so
# their tests fail instead of skipping when something they need is missing.
if [ "$(id -u)" -eq 0 ]; then
  export RUNBOOK_REQUIRE_ISOLATED="${RUNBOOK_REQUIRE_ISOLATED:-1}"
  export RUNBOOK_REQUIRE_TWIN="${RUNBOOK_REQUIRE_TWIN:-1}"
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "test: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$code"
