#!/bin/sh
# OS layer, step 2 (step 1 is debootstrap on the host): the server's Debian
# packages, installed with apt inside a non-booted systemd-nspawn of the fresh
# rootfs. Non-booted nspawn shares the host's network, so apt reaches the same
# mirror the host uses (its debian.sources was copied in, so bookworm-updates
# and bookworm-security are included: a patched server, not the bare suite).
# The postinsts create the 15/main cluster and enable the units; nothing starts,
# because no systemd runs here.
set -eu
export DEBIAN_FRONTEND=noninteractive
# a rerun after a failed step finishes whatever dpkg left half-configured
dpkg --configure -a
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  postgresql redis-server nginx ufw iptables fail2ban python3-systemd rsyslog \
  git python3 python3-venv python3-pip curl ca-certificates jq gzip procps less \
  openssl sudo >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
# The sshd of a real server: root logs in with a key only.
mkdir -p /etc/ssh/sshd_config.d
printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
  > /etc/ssh/sshd_config.d/10-dealix.conf
# Host keys are made per instance (`runbook twin up`): none may be shared.
rm -f /etc/ssh/ssh_host_*
# networkd configures host0 (the file is written per instance).
systemctl enable systemd-networkd.service >/dev/null 2>&1
# A fresh machine-id is made at first boot of each instance.
: > /etc/machine-id
echo "os-packages: done"
