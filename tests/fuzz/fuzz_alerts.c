/*
 * fuzz_alerts.c - fuzz target for the Alertmanager webhook receiver
 * (src/server/alerts.c, srv_alerts_receive): the JSON body of POST /alerts,
 * validated, then each alert logged and counted in alerts_received_total.
 * Called directly, without the HTTP daemon (fuzz_http covers the route
 * itself), so it runs at parser speed.
 *
 * Logs go to /dev/null unless DEMIX_FUZZ_VERBOSE is set (still formatted).
 * Built as fuzz_alerts (libFuzzer, clang) and replay_alerts (any compiler)
 * by tests/fuzz.cmake; seeds in tests/fuzz/corpus/alerts, tokens in
 * alerts.dict.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h" /* demix_observ: no HTTP daemon, no FFmpeg */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        ready = 1;
        srv_log_configure(0, DMX_LOG_DEBUG);
        if (!getenv("DEMIX_FUZZ_VERBOSE")) {
            FILE *null = fopen("/dev/null", "w");
            if (null) stderr = null;
        }
        srv_metrics_init(1 << 20);
    }
    /* As the route hands it over: a NUL-terminated copy (srv_collect_body). */
    char *body = malloc(size + 1);
    if (!body) return 0;
    memcpy(body, data, size);
    body[size] = '\0';
    const char *why = NULL;
    int n = srv_alerts_receive(body, size, "fuzz", &why);
    if (n == -2 && !why) abort(); /* a refusal always says why */
    free(body);
    /* The counters it fed are rendered by GET /metrics. */
    srv_metrics_gauges g = {0};
    if (n > 0) free(srv_metrics_render(&g));
    return 0;
}
