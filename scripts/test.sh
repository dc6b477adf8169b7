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
# Two lanes, side by side, when the twin runs: the suite mostly waits (on sshd,
# PostgreSQL, papermill kernels, a booting container), so the twin's tests (their
# own containers, no sandbox) run in a second pytest beside the sandbox's. The
# sandbox lane's last file (tests/test_zz_no_secret_anywhere.py) waits for the twin
# lane and scans its evidence and records too. RUNBOOK_TEST_LANES=1 runs one pytest.
set +e
if [ "${RUNBOOK_REQUIRE_TWIN:-}" = "1" ] && [ "${RUNBOOK_TEST_LANES:-2}" = "2" ]; then
  lanes="$(mktemp -d "${TMPDIR:-/tmp}/runbook-lanes.XXXXXX")"
  echo "test: two lanes: the twin's tests in the background (log: $lanes/twin.log)"
  (
    .venv/bin/python -m pytest -m twin --basetemp="$lanes/twin-tmp" "$@" >"$lanes/twin.log" 2>&1
    echo $? >"$lanes/twin.rc.tmp" && mv "$lanes/twin.rc.tmp" "$lanes/twin.rc"
  ) &
  twin_lane=$!
  RUNBOOK_TEST_OTHER_LANE="$lanes" .venv/bin/python -m pytest -m "not twin" "$@"
  code=$?
  wait "$twin_lane"
  twin_code=$(cat "$lanes/twin.rc" 2>/dev/null || echo 1)
  echo "test: ---- the twin lane ----"
  cat "$lanes/twin.log"
  # 5: the arguments selected no twin test, which is fine when the other lane ran some
  if [ "$twin_code" -ne 0 ] && [ "$twin_code" -ne 5 ]; then
    echo "test: the twin lane failed (exit $twin_code)" >&2
    [ "$code" -eq 0 ] && code=$twin_code
  fi
  if [ "$code" -eq 5 ] && [ "$twin_code" -eq 0 ]; then
    code=0
  fi
else
  .venv/bin/python -m pytest "$@"
  code=$?
fi
set -e
if [ "$code" -eq 5 ]; then
  echo "test: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$code"
