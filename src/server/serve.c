/*
 * serve.c - `demix serve`: command line, data folders, start-up and
 * shutdown. SIGINT/SIGTERM are blocked in every thread and taken with
 * sigwait() here, so shutdown runs as ordinary code (stop accepting,
 * cancel jobs, join workers) rather than in a signal handler.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "server.h"

struct MHD_Daemon *dmx_http_start(const char *host, int port, int *bound_port);

dmx_srv_config dmx_srv_cfg;
double dmx_srv_start_time;

static void usage(FILE *f) {
    fprintf(f,
            "USAGE\n"
            "    demix serve [--host 127.0.0.1] [--port 8000] [--repo DIR] [--data-dir DIR]\n"
            "                [--workers N] [--max-upload-mb N] [--queue N]\n"
            "\n"
            "    HTTP API for separation jobs. --port 0 picks a free port (logged in the\n"
            "    'startup' line). Logs are JSON lines on stderr.\n"
            "    Routes: GET /livez /health /readyz /models /metrics /jobs /jobs/{id}\n"
            "            /jobs/{id}/stems/{stem}; POST /separate; DELETE /jobs/{id}\n");
}

static int bad(const char *fmt, const char *arg) {
    fprintf(stderr, "demix: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'demix serve --help')\n");
    return 2;
}

static int num(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int mkdirs(const char *p) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", p);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
            *s = '/';
        }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

int dmx_serve_main(int argc, char **argv) {
    dmx_srv_config *c = &dmx_srv_cfg;
    c->host = "127.0.0.1";
    c->port = 8000;
    c->repo = NULL;
    c->data_dir = "demix-data";
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = cores >= 8 ? 2 : 1;
    c->max_upload_bytes = 200LL << 20;
    c->queue_max = 64;
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'},      {"port", required_argument, 0, 'p'},
        {"repo", required_argument, 0, 'r'},      {"data-dir", required_argument, 0, 'd'},
        {"workers", required_argument, 0, 'w'},   {"max-upload-mb", required_argument, 0, 'm'},
        {"queue", required_argument, 0, 'q'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    int o;
    long v;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'H': c->host = optarg; break;
        case 'p':
            if (num(optarg, 0, 65535, &v)) return bad("--port: '%s' is not a port number", optarg);
            c->port = (int)v;
            break;
        case 'r': c->repo = optarg; break;
        case 'd': c->data_dir = optarg; break;
        case 'w':
            if (num(optarg, 1, 256, &v)) return bad("--workers: '%s' is not 1..256", optarg);
            c->workers = (int)v;
            break;
        case 'm':
            if (num(optarg, 1, 1 << 20, &v)) return bad("--max-upload-mb: '%s' is not 1..1048576", optarg);
            c->max_upload_bytes = (int64_t)v << 20;
            break;
        case 'q':
            if (num(optarg, 1, 100000, &v)) return bad("--queue: '%s' is not 1..100000", optarg);
            c->queue_max = (int)v;
            break;
        case 'h': usage(stdout); return 0;
        case ':': return bad("option '%s' needs a value", argv[optind - 1]);
        default: return bad("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return bad("unexpected argument '%s'", argv[optind]);
    if (c->repo) {
        struct stat st;
        if (stat(c->repo, &st) < 0 || !S_ISDIR(st.st_mode))
            return bad("--repo %s: not a directory", c->repo);
    }
    char up[4096], jobs[4096];
    snprintf(up, sizeof up, "%s/uploads", c->data_dir);
    snprintf(jobs, sizeof jobs, "%s/jobs", c->data_dir);
    if (mkdirs(up) < 0 || mkdirs(jobs) < 0) {
        fprintf(stderr, "demix: cannot create %s: %s\n", c->data_dir, strerror(errno));
        return 1;
    }

    /* Block the stop signals before any thread exists, so all inherit it. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    dmx_srv_start_time = dmx_srv_now();
    dmx_log_set(dmx_srv_engine_log, NULL);
    if (dmx_jobs_start(c->workers, c->queue_max) < 0) {
        dmx_srv_log(DMX_LOG_ERROR, "demix.server", "startup", NULL, NULL,
                    "cannot start the worker threads");
        return 1;
    }
    int port = 0;
    struct MHD_Daemon *d = dmx_http_start(c->host, c->port, &port);
    if (!d) {
        dmx_srv_log(DMX_LOG_ERROR, "demix.server", "startup", NULL, NULL,
                    "cannot listen on %s:%d (address in use, or not an IPv4 address?)", c->host,
                    c->port);
        dmx_jobs_stop();
        return 1;
    }
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "host", c->host);
    cJSON_AddNumberToObject(f, "port", port);
    cJSON_AddNumberToObject(f, "workers", c->workers);
    cJSON_AddStringToObject(f, "data_dir", c->data_dir);
    cJSON_AddStringToObject(f, "repo", c->repo ? c->repo : "");
    cJSON_AddStringToObject(f, "version", DEMIX_SERVER_VERSION);
    dmx_srv_log(DMX_LOG_INFO, "demix.server", "startup", NULL, f, "listening on http://%s:%d",
                c->host, port);

    int sig = 0;
    sigwait(&stop, &sig);
    dmx_srv_log(DMX_LOG_INFO, "demix.server", "shutdown", NULL, NULL,
                "signal %d: stopping", sig);
    MHD_stop_daemon(d);
    dmx_jobs_stop();
    dmx_srv_log(DMX_LOG_INFO, "demix.server", "shutdown", NULL, NULL, "stopped");
    return 0;
}
