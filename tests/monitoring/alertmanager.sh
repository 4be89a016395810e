# alertmanager.sh - deploy/alertmanager/alertmanager.yml as shipped and as
# rendered with Slack and email configured passes `amtool check-config`, and
# routes each severity to the intended receiver.
set -u
: "${SRC:?}" "${WORK:?}"
rm -rf "$WORK" && mkdir -p "$WORK"
AM="$SRC/deploy/alertmanager"
FAILURES=0
fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }

amtool check-config "$AM/alertmanager.yml" || fail "shipped alertmanager.yml"
sh "$AM/render-config.sh" "$AM/alertmanager.yml" "$WORK/plain.yml" || fail "render (nothing set)"
amtool check-config "$WORK/plain.yml" || fail "rendered with nothing set"
grep -q slack_configs "$WORK/plain.yml" && fail "Slack kept without a webhook URL file"
grep -q email_configs "$WORK/plain.yml" && fail "email kept without ALERT_EMAIL_TO"

echo 'https://hooks.slack.com/services/T0/B0/x' >"$WORK/slack_url"
echo 'secret' >"$WORK/smtp_pw"
ALERT_SLACK_WEBHOOK_URL_FILE="$WORK/slack_url" ALERT_SLACK_CHANNEL='#ops' \
    ALERT_EMAIL_TO='oncall@example.com' ALERT_EMAIL_FROM='am@example.com' \
    ALERT_SMTP_SMARTHOST='smtp.example.com:587' ALERT_SMTP_USERNAME='am' \
    ALERT_SMTP_PASSWORD_FILE="$WORK/smtp_pw" DEMIX_ALERTS_URL='http://127.0.0.1:8123/alerts' \
    sh "$AM/render-config.sh" "$AM/alertmanager.yml" "$WORK/full.yml" || fail "render (all set)"
amtool check-config "$WORK/full.yml" || fail "rendered with Slack and email"
for want in "api_url_file: '$WORK/slack_url'" "channel: '#ops'" "to: 'oncall@example.com'" \
    "smtp_smarthost: 'smtp.example.com:587'" "url: 'http://127.0.0.1:8123/alerts'" \
    "auth_password_file: '$WORK/smtp_pw'"; do
    grep -qF "$want" "$WORK/full.yml" || fail "rendered config lacks $want"
done
grep -q 'hooks.slack.com' "$WORK/full.yml" && fail "the Slack secret was copied into the config"
grep -q 'http_config' "$WORK/full.yml" "$WORK/plain.yml" && fail "bearer token block kept without DEMIX_ALERTS_TOKEN"

# The /alerts secret: DEMIX_ALERTS_TOKEN becomes a credentials file (mode
# 600) that every demix webhook sends as Authorization: Bearer.
mkdir -p "$WORK/tok"
DEMIX_ALERTS_TOKEN='t0k-en' sh "$AM/render-config.sh" "$AM/alertmanager.yml" "$WORK/tok/am.yml" || fail "render (token)"
amtool check-config "$WORK/tok/am.yml" >/dev/null || fail "rendered with the alerts token"
[ "$(grep -c "credentials_file: '$WORK/tok/alerts_token'" "$WORK/tok/am.yml")" = "$(grep -c "url: '.*/alerts'" "$WORK/tok/am.yml")" ] \
    || fail "not every demix webhook sends the token"
grep -q 't0k-en' "$WORK/tok/am.yml" && fail "the alerts token was copied into the config"
[ "$(cat "$WORK/tok/alerts_token")" = t0k-en ] || fail "alerts_token file content"
[ "$(stat -c %a "$WORK/tok/alerts_token")" = 600 ] || fail "alerts_token file is not mode 600"

# Routing: critical -> critical, warning -> warning, info and unlabelled -> log-only.
route() { amtool config routes test --config.file="$1" "${@:2}" 2>/dev/null | tr -d '\n'; }
for cfg in "$AM/alertmanager.yml" "$WORK/full.yml"; do
    [ "$(route "$cfg" severity=critical alertname=DemixDown)" = critical ] || fail "critical route ($cfg)"
    [ "$(route "$cfg" severity=warning alertname=DemixHighCpu)" = warning ] || fail "warning route ($cfg)"
    [ "$(route "$cfg" severity=info alertname=DemixActiveSessionsHigh)" = log-only ] || fail "info route ($cfg)"
    [ "$(route "$cfg" alertname=Other)" = log-only ] || fail "default route ($cfg)"
done
# Inhibition: critical mutes warning, warning mutes info.
grep -A3 "source_matchers: \['severity=\"critical\"'\]" "$AM/alertmanager.yml" | grep -q 'severity="warning"' \
    || fail "no critical->warning inhibition"
grep -A3 "source_matchers: \['severity=\"warning\"'\]" "$AM/alertmanager.yml" | grep -q 'severity="info"' \
    || fail "no warning->info inhibition"

if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
echo "all checks passed"
