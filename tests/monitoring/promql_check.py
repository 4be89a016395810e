#!/usr/bin/env python3
"""promql_check.py - static checks of the monitoring configuration (stdlib only).

  dashboard OVERVIEW_JSON [--metrics FILE]
      The dashboard has the spec's 13 panels, each with PromQL targets, and
      every metric its queries use is one demix or an exporter exposes. With
      --metrics (a live /metrics page of demix) demix's names are checked
      against what the running service really exposes.
  exprs OVERVIEW_JSON ALERT_RULES
      Prints every dashboard query (Grafana variables replaced) and every
      rule expression, one per line, for the live test to evaluate.
  evaluate PROMETHEUS_URL OVERVIEW_JSON ALERT_RULES
      Evaluates every expression of `exprs` through /api/v1/query; fails
      on any that Prometheus answers with an error.
  coverage ALERT_RULES TEST_FILE...
      Every alert of ALERT_RULES has, in the promtool rule tests, a case
      where it fires (with labels and annotations) and one where it does not.
"""
import json
import re
import sys

# The 13 panels of the system spec, in order.
PANELS = [
    "API Status", "Total Separations", "Success Rate", "Active Sessions",
    "Request Rate", "Separation Rate", "Request Duration (p50, p95, p99)",
    "Separation Duration (p50, p95, p99)", "CPU Usage", "Memory Usage",
    "Disk Usage", "Error Summary", "Model Usage",
]

# What demix serve exposes (issue 5; docs/MONITORING.md, "Metrics").
HIST = ["http_request_duration_seconds", "separation_duration_seconds",
        "separation_file_size_bytes", "separation_audio_duration_seconds",
        "model_load_duration_seconds", "model_inference_duration_seconds",
        "job_queue_wait_seconds"]
DEMIX = set(
    ["http_requests_total", "separations_total", "models_loaded", "cpu_usage_percent",
     "memory_usage_bytes", "memory_available_bytes", "memory_percent", "disk_usage_bytes",
     "disk_free_bytes", "gpu_memory_used_bytes", "gpu_utilization_percent", "active_sessions",
     "temp_files", "temp_storage_bytes", "errors_total", "demix_build_info", "queue_depth",
     "circuit_breaker_state", "circuit_breaker_transitions_total",
     "rate_limited_requests_total", "rate_limit_buckets", "retries_total", "alerts_received_total",
     "jobs_unsaved", "store_write_failures_total",
     "process_start_time_seconds", "process_cpu_seconds_total", "process_resident_memory_bytes",
     "process_virtual_memory_bytes", "process_open_fds", "process_max_fds"]
    + [h + s for h in HIST for s in ("_bucket", "_sum", "_count")])
# Exporters of the stack: node-exporter, cAdvisor, Prometheus, Alertmanager.
EXPORTERS = {
    "up", "node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_load1",
    "container_start_time_seconds", "container_memory_working_set_bytes",
    "container_spec_memory_limit_bytes", "container_cpu_usage_seconds_total",
    "prometheus_config_last_reload_successful", "prometheus_rule_evaluation_failures_total",
    "prometheus_notifications_alertmanagers_discovered", "prometheus_notifications_dropped_total",
    "alertmanager_config_last_reload_successful", "alertmanager_notifications_failed_total",
}

KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan", "le",
}
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def metric_names(expr):
    """Metric names used by a PromQL expression (selectors and recorded series)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tok = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("("):      # function call
            continue
        if tok.lower() in KEYWORDS or re.fullmatch(r"[0-9a-fA-F]+", tok) and e[m.start() - 1:m.start()].isdigit():
            continue
        names.add(tok)
    return names


def dashboard_exprs(path):
    d = json.load(open(path))
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t.get("expr", "")))
    return d, out


def grafana_subst(expr):
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    return expr


def rule_exprs(path):
    out = []
    for line in open(path):
        m = re.match(r"^\s+expr:\s*(.+?)\s*$", line)
        if m:
            out.append(m.group(1))
    return out


def cmd_dashboard(args):
    path = args[0]
    live = None
    if len(args) == 3 and args[1] == "--metrics":
        live = set()
        for line in open(args[2]):
            if line and not line.startswith("#") and line.strip():
                live.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    d, exprs = dashboard_exprs(path)
    bad = []
    panels = [p for p in d["panels"] if p.get("type") != "row"]
    titles = [p["title"] for p in panels]
    if titles != PANELS:
        bad.append("panels are %s, expected the spec's 13: %s" % (titles, PANELS))
    for p in panels:
        if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
            bad.append("panel '%s' has no PromQL query" % p["title"])
        if p.get("datasource", {}).get("uid") != "prometheus":
            bad.append("panel '%s' does not use the provisioned datasource" % p["title"])
    # POST /separate?wait=true lasts a whole separation: the request-latency
    # panel leaves that label out (demix labels it apart for this).
    for title, e in exprs:
        if title.startswith("Request Duration") and 'endpoint!="/separate?wait=true"' not in e:
            bad.append("panel '%s' counts wait=true separations as request latency: %s" % (title, e))
    used = set()
    for title, e in exprs:
        for n in metric_names(e):
            used.add(n)
            if n not in DEMIX and n not in EXPORTERS:
                bad.append("panel '%s' uses '%s', which neither demix nor an exporter exposes" % (title, n))
            elif live is not None and n in DEMIX and n not in live:
                bad.append("panel '%s' uses '%s', absent from the live /metrics of demix serve" % (title, n))
    for b in bad:
        print("FAIL: " + b)
    print("dashboard: %d panels, %d queries, metrics used: %s" % (len(panels), len(exprs), " ".join(sorted(used))))
    return 1 if bad else 0


def cmd_exprs(args):
    for e in all_exprs(args[0], args[1]):
        print(e)
    return 0


def all_exprs(dashboard, rules):
    return [grafana_subst(e) for _, e in dashboard_exprs(dashboard)[1]] + rule_exprs(rules)


def cmd_evaluate(args):
    import urllib.parse
    import urllib.request
    bad = 0
    exprs = all_exprs(args[1], args[2])
    for e in exprs:
        url = args[0].rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": e})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                d = json.load(r)
        except urllib.error.HTTPError as h:
            d = json.load(h)
        except Exception as x:  # noqa: BLE001 - reported as a failure
            d = {"status": "error", "error": str(x)}
        if d.get("status") != "success":
            print("FAIL: %s -> %s %s" % (e, d.get("errorType"), d.get("error")))
            bad += 1
    print("evaluated %d expressions, %d failed" % (len(exprs), bad))
    return 1 if bad or len(exprs) < 50 else 0


def cmd_coverage(args):
    alerts = [m.group(1) for m in re.finditer(r"^\s+- alert:\s*(\S+)", open(args[0]).read(), re.M)]
    fires, quiet = set(), set()
    for path in args[1:]:
        cur = None
        lines = open(path).read().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^\s+alertname:\s*(\S+)", line)
            if m:
                cur = m.group(1)
                continue
            m = re.match(r"^\s+exp_alerts:\s*(.*)$", line)
            if m and cur:
                if m.group(1).strip() == "[]":
                    quiet.add(cur)
                else:
                    block = "\n".join(lines[i + 1:i + 6])
                    if "exp_labels:" in block and "severity:" in block and "exp_annotations:" in block:
                        fires.add(cur)
                cur = None
    bad = 0
    for a in alerts:
        if a not in fires:
            print("FAIL: alert %s has no firing test case with labels and annotations" % a)
            bad += 1
        if a not in quiet:
            print("FAIL: alert %s has no test case where it does not fire" % a)
            bad += 1
    for a in sorted((fires | quiet) - set(alerts)):
        print("FAIL: tests name %s, which is not an alert" % a)
        bad += 1
    print("coverage: %d alerts, %d firing cases, %d quiet cases" % (len(alerts), len(fires), len(quiet)))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit({"dashboard": cmd_dashboard, "exprs": cmd_exprs, "evaluate": cmd_evaluate,
              "coverage": cmd_coverage}[sys.argv[1]](sys.argv[2:]))
