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
#   DEMIX_ALERTS_TOKEN            shared secret of POST /alerts (demix serve reads the
#                                 same variable): written to OUT's folder/alerts_token
#                                 (mode 600) and sent as a bearer token
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
token=0
if [ -n "${DEMIX_ALERTS_TOKEN:-}" ]; then
    token=1
    ALERTS_TOKEN_FILE=$(cd "$(dirname "$out")" && pwd)/alerts_token
    (umask 077 && printf '%s' "$DEMIX_ALERTS_TOKEN" >"$ALERTS_TOKEN_FILE.tmp")
    mv "$ALERTS_TOKEN_FILE.tmp" "$ALERTS_TOKEN_FILE"
    export ALERTS_TOKEN_FILE
fi
SLACK=$slack EMAIL=$email NOPW=$nopw TOKEN=$token awk '
    /^[ \t]*# begin slack[ \t]*$/ { if (ENVIRON["SLACK"] != "1") skip = 1; next }
    /^[ \t]*# end slack[ \t]*$/   { skip = 0; next }
    /^[ \t]*# begin email[ \t]*$/ { if (ENVIRON["EMAIL"] != "1") skip = 1; next }
    /^[ \t]*# end email[ \t]*$/   { skip = 0; next }
    /^[ \t]*# begin alerts-token[ \t]*$/ { if (ENVIRON["TOKEN"] != "1") skip = 1; next }
    /^[ \t]*# end alerts-token[ \t]*$/   { skip = 0; next }
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
