#!/bin/sh
# App layer: set the server up as production.yaml describes it, inside a
# non-booted systemd-nspawn of (OS layer + an empty overlay upper dir). The
# upper dir afterwards *is* the app layer.
#
# Inputs, bind-mounted read-only at /run/twin-build by lib/runbook/twin/build.py:
#   repo/origin.git  the bare origin (same history as the sandbox's: two commits
#                    and the server-backup-20260423-084442 branch)
#   repo/clone       its clone, as deployed
#   wheels/          the app's requirements, downloaded on the host with the
#                    host's own pip configuration (index, certificates): the
#                    container needs neither network nor the host's CA bundle
#   seed/            phase-N.sql (COPY data) and phases.txt ("file dump epoch")
#   twin/            this directory (unit file, nginx site)
#   env/             dotenv, dotenv-pre-v3 (the app's .env and its old backup)
set -eu
IN=/run/twin-build
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

# 1. git: the origin lives on the box; the production URL is rewritten to it,
#    so `git fetch origin` / `git pull` on the twin work unchanged.
mkdir -p /srv/git
cp -a "$IN/repo/origin.git" /srv/git/dealix.git
git config --system url./srv/git/dealix.git.insteadOf https://github.com/VoXc2/dealix.git
git config --system --add safe.directory '*'
cp -a "$IN/repo/clone" /opt/dealix
git -C /opt/dealix remote set-url origin https://github.com/VoXc2/dealix.git
git -C /opt/dealix fetch -q origin
chown -R root:root /opt/dealix /srv/git/dealix.git
# the origin stands for GitHub: its pre-receive hook (written by build_app_repo) refuses
# pushes to main and the kept branch, as GitHub's branch protection does (runbook.ops.armor)
grep -q 'dealix-runbook armor' /srv/git/dealix.git/hooks/pre-receive
test -x /srv/git/dealix.git/hooks/pre-receive

# 2. the app's venv, from the wheels only (offline by construction)
python3 -m venv /opt/dealix/.venv
/opt/dealix/.venv/bin/pip install -q --no-index --find-links "$IN/wheels" \
  --disable-pip-version-check -r /opt/dealix/requirements.txt

# 3. deploy-local files
install -m 0600 "$IN/env/dotenv" /opt/dealix/.env
install -m 0600 "$IN/env/dotenv-pre-v3" /opt/dealix/.env.pre-v3.0.0.bak
touch -d '2026-04-23 08:44:42 +0300' /opt/dealix/.env.pre-v3.0.0.bak
git -C /opt/dealix rev-parse HEAD > /opt/dealix/.last_good_sha
mkdir -p /var/backups/postgres /var/log/dealix
chown postgres:postgres /var/backups/postgres

# 4. the database: the cluster is started by hand (no systemd runs here)
DBPW=$(sed -n 's#^DATABASE_URL=postgresql://dealix:\([^@]*\)@.*#\1#p' /opt/dealix/.env)
[ -n "$DBPW" ] || { echo "provision: no DATABASE_URL password in .env" >&2; exit 1; }
pg_ctlcluster 15 main start
cd /
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -v pw="$DBPW" <<'SQL'
CREATE ROLE dealix LOGIN PASSWORD :'pw';
CREATE DATABASE dealix OWNER dealix;
SQL
(cd /opt/dealix && .venv/bin/alembic upgrade head >/dev/null)
# Seed in phases, with one nightly-style `pg_dump | gzip` between phases, so
# each day's backup holds what production held at 03:00 that night.
while read -r file dump epoch; do
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d dealix -f "$IN/seed/$file" >/dev/null
  if [ "$dump" != "-" ]; then
    runuser -u postgres -- pg_dump dealix | gzip -6 > "/var/backups/postgres/$dump"
    chown postgres:postgres "/var/backups/postgres/$dump"
    touch -d "@$epoch" "/var/backups/postgres/$dump"
  fi
done < "$IN/seed/phases.txt"
runuser -u postgres -- psql -q -d dealix -c 'ANALYZE' >/dev/null
pg_ctlcluster 15 main stop

# 5. the service
install -m 0644 "$IN/twin/dealix-api.service" /etc/systemd/system/dealix-api.service
# Twin-only drop-in: the app's httpx clients trust certifi's bundle, which lacks
# the twin's test CA; the system bundle has it (`runbook twin up` adds it).
mkdir -p /etc/systemd/system/dealix-api.service.d
printf '[Service]\nEnvironment=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n' \
  > /etc/systemd/system/dealix-api.service.d/twin-ca.conf
systemctl enable dealix-api.service >/dev/null 2>&1

# 6. nginx: api.dealix.me on 443; the certificate is made per instance at `up`
rm -f /etc/nginx/sites-enabled/default
install -m 0644 "$IN/twin/nginx-api.dealix.me.conf" /etc/nginx/sites-available/api.dealix.me
ln -sf ../sites-available/api.dealix.me /etc/nginx/sites-enabled/api.dealix.me
mkdir -p /etc/ssl/dealix

# 7. ufw: the rules are written now (no CAP_NET_ADMIN here, so ufw prints
#    "Permission denied" for iptables) and applied at first boot by ENABLED=yes.
for port in 22/tcp 80/tcp 443/tcp; do ufw allow "$port" >/dev/null 2>&1 || true; done
grep -q 'dport 22 ' /etc/ufw/user.rules || { echo "provision: ufw rules not written" >&2; exit 1; }
sed -i 's/^ENABLED=.*/ENABLED=yes/' /etc/ufw/ufw.conf

# 8. fail2ban: Debian's defaults-debian.conf enables the sshd jail, which reads
#    /var/log/auth.log (written by rsyslog).
grep -q '^\[sshd\]' /etc/fail2ban/jail.d/defaults-debian.conf
echo "provision-app: done"
