#!/usr/bin/env bash
# Set everything up, start the sandbox, and run the monthly restore drill
# headless against it with its evidence saved.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/runbook sandbox up
.venv/bin/runbook run restore_drill
