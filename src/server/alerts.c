/*
 * alerts.c - POST /alerts, the receiver for Alertmanager's webhook
 * (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
 * Each alert of a notification becomes one JSON log line (event_type
 * "alert") and one increment of alerts_received_total{alertname, severity,
 * status}, so alerts land in the same log stream as the events that caused
 * them. The payload is validated first and refused whole (400) if any
 * alert is malformed: a half-logged batch is harder to reason about than
 * a refused one, which Alertmanager reports in its own log.
 *
 * Everything here is outside input: log.c makes every string of a line
 * valid UTF-8, and the metric labels go through the alert budget of
 * metrics.c. The HTTP side (content type, shared secret, body
 * size) is the /alerts handler in routes.c; this file needs log.c and
 * metrics.c only, so the fuzz target links no HTTP daemon and no FFmpeg.
 */
#define _GNU_SOURCE
#include <string.h>

#include "server.h"

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* NULL if the alert is well formed, else what is wrong with it. */
static const char *check_alert(const cJSON *a) {
    if (!cJSON_IsObject(a)) return "an alert is not an object";
    const char *st = str_field(a, "status");
    if (!st || (strcmp(st, "firing") && strcmp(st, "resolved")))
        return "alert status must be \"firing\" or \"resolved\"";
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(a, "labels");
    if (!cJSON_IsObject(labels)) return "alert labels must be an object";
    const char *name = str_field(labels, "alertname");
    if (!name || !*name) return "alert labels lack alertname";
    const cJSON *l;
    cJSON_ArrayForEach(l, labels) if (!cJSON_IsString(l)) return "label values must be strings";
    const cJSON *ann = cJSON_GetObjectItemCaseSensitive(a, "annotations");
    if (ann && !cJSON_IsObject(ann)) return "alert annotations must be an object";
    return NULL;
}

int srv_alerts_receive(const char *body, size_t len, const char *request_id, const char **why) {
    *why = NULL;
    cJSON *doc = body ? cJSON_ParseWithLength(body, len) : NULL;
    if (!doc) return -1;
    const cJSON *alerts = cJSON_GetObjectItemCaseSensitive(doc, "alerts");
    if (!cJSON_IsObject(doc))
        *why = "the payload must be an object";
    else if (!cJSON_IsArray(alerts))
        *why = "the payload lacks an \"alerts\" array";
    const cJSON *a;
    if (!*why) cJSON_ArrayForEach(a, alerts) if (!*why) *why = check_alert(a);
    if (*why) {
        cJSON_Delete(doc);
        return -2;
    }
    const char *receiver = str_field(doc, "receiver");
    const char *group = str_field(doc, "groupKey");
    int n = 0;
    cJSON_ArrayForEach(a, alerts) {
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(a, "labels");
        const char *name = str_field(labels, "alertname");
        const char *sev = str_field(labels, "severity");
        const char *st = str_field(a, "status");
        srv_metrics_alert(name, sev ? sev : "none", st);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "alertname", name);
        cJSON_AddStringToObject(f, "severity", sev ? sev : "none");
        cJSON_AddStringToObject(f, "status", st);
        cJSON_AddItemToObject(f, "labels", cJSON_Duplicate(labels, 1));
        const cJSON *ann = cJSON_GetObjectItemCaseSensitive(a, "annotations");
        cJSON_AddItemToObject(f, "annotations",
                              ann ? cJSON_Duplicate(ann, 1) : cJSON_CreateObject());
        static const char *const keys[] = {"startsAt", "endsAt", "generatorURL", "fingerprint"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            const char *v = str_field(a, keys[k]);
            if (v) cJSON_AddStringToObject(f, keys[k], v);
        }
        if (receiver) cJSON_AddStringToObject(f, "receiver", receiver);
        if (group) cJSON_AddStringToObject(f, "group_key", group);
        const char *summary = ann ? str_field(ann, "summary") : NULL;
        srv_log(!strcmp(st, "firing") && sev && !strcmp(sev, "critical") ? DMX_LOG_ERROR
                : !strcmp(st, "firing")                                  ? DMX_LOG_WARN
                                                                         : DMX_LOG_INFO,
                "demix.alerts", "alert", request_id, f, "alert %s %s%s%s", name, st,
                summary ? ": " : "", summary ? summary : "");
        n++;
    }
    cJSON_Delete(doc);
    return n;
}
