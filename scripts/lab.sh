#!/usr/bin/env bash
# JupyterLab on the project's kernel, with the sandbox up: the interactive way in.
#
#   scripts/lab.sh                 # http://127.0.0.1:8888/lab?token=...
#   LAB_PORT=9999 scripts/lab.sh
#   LAB_ROOT=/tmp/copy LAB_SETUP=0 scripts/lab.sh   # (tests) other notebooks folder, no setup
#   scripts/lab.sh --prepare-only  # only make the working copies, say where, and stop
#
# It serves YOUR working copies of the notebooks, never the tracked notebooks/:
# $LAB_ROOT if set, else ~/.local/share/dealix-runbook/lab/<user>/, copied fresh
# from notebooks/ on every start with outputs stripped (a copy you changed moves
# to .previous/<UTC time>/ there first). So autosave never writes your outputs
# or an edited parameters cell into the files the next person opens or that
# `runbook run` executes (runbook.core.workcopy).
#
# Bound to 127.0.0.1 only and token-protected (a random token unless
# JUPYTER_TOKEN is set): a notebook session can run commands on the server,
# so it is never served on the network. Reach it from elsewhere with an SSH
# tunnel (ssh -L 8888:127.0.0.1:8888 host). Ctrl-C stops JupyterLab; the
# sandbox keeps running (`.venv/bin/runbook sandbox down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
PREPARE_ONLY=0
if [ "${1:-}" = "--prepare-only" ]; then PREPARE_ONLY=1; shift; fi
[ "${LAB_SETUP:-1}" = 0 ] || scripts/setup.sh
LAB_DIR="$(.venv/bin/python -c 'from runbook.core.workcopy import default_root; print(default_root())')"
.venv/bin/python -m runbook.core.workcopy --root "$LAB_DIR"
[ "$PREPARE_ONLY" = 0 ] || exit 0
.venv/bin/runbook sandbox up
PORT="${LAB_PORT:-8888}"
TOKEN="${JUPYTER_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(24))')}"
ROOT_FLAG=()
[ "$(id -u)" -eq 0 ] && ROOT_FLAG=(--allow-root)
echo "lab: http://127.0.0.1:${PORT}/lab/tree/health_check.ipynb?token=${TOKEN}"
echo "lab: pick the kernel \"Dealix runbook (.venv)\" (the notebooks name it already)"
exec env JUPYTER_TOKEN="$TOKEN" .venv/bin/jupyter lab \
  --no-browser --ip=127.0.0.1 --port="$PORT" --port-retries=0 \
  --ServerApp.root_dir="$LAB_DIR" \
  --MappingKernelManager.default_kernel_name=dealix-runbook \
  "${ROOT_FLAG[@]}" "$@"
