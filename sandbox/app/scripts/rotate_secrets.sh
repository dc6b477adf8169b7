#!/usr/bin/env bash
# Rotate the secrets this server owns (ADMIN_KEY, WEBHOOK_SECRET) in .env.
#
# Runbook scenario 6: `cd /opt/dealix && bash scripts/rotate_secrets.sh`, then
# restart the API. The old .env is kept as .env.bak.<UTC timestamp> (0600) so
# a bad rotation can be undone. Secret values are never printed: this runs in
# incident channels and recorded sessions.
set -euo pipefail

app_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_file="$app_dir/.env"
keys=(ADMIN_KEY WEBHOOK_SECRET)

if [[ ! -f "$env_file" ]]; then
    echo "rotate_secrets: $env_file not found" >&2
    exit 1
fi

umask 077

# Two rotations within one second must not overwrite the first backup.
while :; do
    backup="$env_file.bak.$(date -u +%Y%m%dT%H%M%SZ)"
    [[ -e "$backup" ]] || break
    sleep 1
done
cp "$env_file" "$backup"
chmod 0600 "$backup"

new_secret() {
    # 32 random bytes, URL- and shell-safe, so the value needs no quoting in .env.
    head -c 32 /dev/urandom | base64 | tr -d '/+=\n'
}

tmp="$(mktemp "$app_dir/.env.rotate.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

new_admin_key="$(new_secret)"
new_webhook_secret="$(new_secret)"
# A failed generator inside $(...) would not trip set -e: check the result.
if (( ${#new_admin_key} < 32 || ${#new_webhook_secret} < 32 )); then
    echo "rotate_secrets: could not generate new values; .env left unchanged" >&2
    exit 1
fi

# Values reach awk through the environment, not argv, so they never show up
# in `ps` output.
NEW_ADMIN_KEY="$new_admin_key" NEW_WEBHOOK_SECRET="$new_webhook_secret" awk '
    BEGIN { want["ADMIN_KEY"] = ENVIRON["NEW_ADMIN_KEY"]; want["WEBHOOK_SECRET"] = ENVIRON["NEW_WEBHOOK_SECRET"] }
    {
        line = $0
        sub(/^[ \t]*export[ \t]+/, "", line)
        split(line, kv, "=")
        key = kv[1]
        gsub(/[ \t]/, "", key)
        if ((key in want) && index(line, "=") > 0 && line !~ /^[ \t]*#/) {
            print key "=" want[key]
            done[key] = 1
            next
        }
        print
    }
    END {
        for (k in want) if (!(k in done)) print k "=" want[k]
    }
' "$env_file" >"$tmp"

# Keep the owner and mode of the live file (the API user must still read it).
chmod --reference="$env_file" "$tmp"
chown --reference="$env_file" "$tmp" 2>/dev/null || true
mv -f "$tmp" "$env_file"
trap - EXIT

echo "rotated: ${keys[*]} in $env_file"
echo "backup:  $backup (mode 0600)"
echo "reminder: ANTHROPIC_API_KEY, OPENAI_API_KEY and GOOGLE_API_KEY cannot be rotated here;" \
    "rotate them in each provider's console and update .env."
echo "next: restart the API (systemctl restart dealix-api) so the new values take effect," \
    "and give the new ADMIN_KEY and WEBHOOK_SECRET to their users from .env, not from this output."
