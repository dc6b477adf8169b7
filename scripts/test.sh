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
build_pid=""
if [ "${RUNBOOK_REQUIRE_TWIN:-}" = "1" ]; then
  # A cold twin build is mostly downloads (debootstrap, apt): start it now, beside
  # the sandbox tests; the twin fixture waits on the cache's lock and then finds
  # the layers built (or, if this build failed, builds them itself and says why).
  build_log="${TMPDIR:-/tmp}/runbook-twin-build.$$.log"
  .venv/bin/runbook twin build >"$build_log" 2>&1 &
  build_pid=$!
  echo "test: building the twin's layers in the background (log: $build_log)"
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
if [ -n "$build_pid" ]; then
  wait "$build_pid" || { echo "test: the background twin build failed; its log:" >&2; tail -n 40 "$build_log" >&2; }
fi
set -e
if [ "$code" -eq 5 ]; then
  echo "test: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$code"
