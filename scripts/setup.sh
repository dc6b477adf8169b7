#!/usr/bin/env bash
# Set up this checkout on a Debian machine: the packages the sandbox needs
# (iptables, fail2ban, ufw: the isolated mode, `runbook sandbox up --isolated`;
# ufw stays disabled on this machine, it runs only inside the sandbox's namespace;
# systemd-container, debootstrap, zstd: the production twin, `runbook twin up`;
# systemd-container is version-locked to systemd, so apt may upgrade the host's
# systemd packages too, which is harmless on a machine without systemd as PID 1),
# a .venv with the project and its extras (prefect too: CI tests the flow against a
# real local Prefect server), and the project's Jupyter kernel.
# Idempotent, and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(openssh-server openssh-client postgresql redis-server nginx-light git python3 python3-venv ca-certificates procps iproute2 iptables fail2ban ufw chromium systemd-container debootstrap zstd)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # policy-rc.d keeps apt from starting the system's own postgres/redis/nginx:
  # the sandbox runs its own, on its own ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# reinstall only when the project's metadata changed
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing the project and its extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[sandbox,test,dev,prefect]'
  touch .venv/.installed
fi
# One named kernel for the project, inside the venv: a stray `python3`
# kernelspec elsewhere would otherwise run the notebooks with another interpreter.
if [ ! -f .venv/share/jupyter/kernels/dealix-runbook/kernel.json ]; then
  .venv/bin/python -m ipykernel install --sys-prefix --name dealix-runbook \
    --display-name "Dealix runbook (.venv)" >/dev/null
fi
echo "setup: ready ($(.venv/bin/python --version), kernel dealix-runbook)"
