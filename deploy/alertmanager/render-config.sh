#!/bin/sh
# render-config.sh IN OUT - writes the Alertmanager configuration to run from
# alertmanager.yml and the environment (POSIX sh + awk: runs in the busybox
# Alertmanager image and on Debian). See the header of alertmanager.yml.
#   ALERT_SLACK_WEBHOOK_URL_FILE  file holding the Slack webhook URL (enables Slack)
#   ALERT_SLACK_CHANNEL           Slack channel (default #demix-alerts)
#   ALERT_EMAIL_TO                address for critical alerts (enables email)
#   ALERT_EMAIL_FROM, ALERT_SMTP_SMARTHOST, ALERT_SMTP_USERNAME,
#   ALERT_SMTP_PASSWORD_FILE      SMTP sender, host:port, login, password file
#   DEMIX_ALERTS_URL              demix's webhook (default http://demix:8000/alerts)
set -eu
in=${1:?usage: render-config.sh IN OUT}
out=${2:?usage: render-config.sh IN OUT}
slack=0
if [ -n "${ALERT_SLACK_WEBHOOK_URL_FILE:-}" ] && [ -s "$ALERT_SLACK_WEBHOOK_URL_FILE" ]; then slack=1; fi
email=0
if [ -n "${ALERT_EMAIL_TO:-}" ]; then email=1; fi
if [ "$email" = 1 ] && [ -z "${ALERT_SMTP_PASSWORD_FILE:-}" ]; then
    # No password: drop the line (an unauthenticated relay).
    nopw=1
else
    nopw=0
fi
SLACK=$slack EMAIL=$email NOPW=$nopw awk '
    /^[ \t]*# begin slack[ \t]*$/ { if (ENVIRON["SLACK"] != "1") skip = 1; next }
    /^[ \t]*# end slack[ \t]*$/   { skip = 0; next }
    /^[ \t]*# begin email[ \t]*$/ { if (ENVIRON["EMAIL"] != "1") skip = 1; next }
    /^[ \t]*# end email[ \t]*$/   { skip = 0; next }
    skip { next }
    /auth_password_file:/ && ENVIRON["NOPW"] == "1" { next }
    !/^[ \t]*#/ && /# env: [A-Z_]+[ \t]*$/ {
        name = $0; sub(/.*# env: /, "", name); sub(/[^A-Z_].*/, "", name)
        v = ENVIRON[name]
        if (v != "") {
            gsub(/\\/, "\\\\", v); gsub(/&/, "\\\\&", v); gsub(/'\''/, "'\'''\''", v)
            sub(/'\''[^'\'']*'\''/, "'\''" v "'\''")
        }
    }
    { print }
' "$in" >"$out.tmp"
mv "$out.tmp" "$out"
