/*
 * fuzz_http.c - fuzz target for the HTTP service: each input is the raw byte
 * stream of one client connection (request line, headers, body; several
 * pipelined requests too), handled by the real daemon of `demix serve`
 * (src/server/http.c srv_http_start: request ids, client address and
 * X-Forwarded-For, API key, routing in routes.c, POST /separate multipart
 * uploads, POST /alerts JSON in alerts.c, the probes, metrics, docs and web
 * page).
 *
 * Set-up, once: a temporary data folder and model folder (one model file,
 * which does not load: a real one can be named with DEMIX_FUZZ_MODEL), the
 * configuration serve.c would make, the metrics, and the job store. The job
 * system is started and stopped again at once, so an upload that decodes is
 * refused with queue_full instead of running a separation: every run is fast
 * and no job outlives its request. Per input: a socketpair, one end handed
 * to the daemon with MHD_add_connection (under a made-up 127.0.0.1 peer
 * address, a trusted proxy, so X-Forwarded-For is parsed), the bytes written,
 * the write side shut, the response read, and then a wait until the daemon
 * has closed and freed the connection, so nothing of one input is still
 * running (or allocated) when the next starts. A connection that is not
 * done within 10 s is reported as a hang (abort).
 *
 * Service logs go to /dev/null (DEMIX_FUZZ_VERBOSE=1 shows them, and the
 * responses on stdout); they are still formatted, so the logging code runs
 * on hostile values.
 *
 * Built as fuzz_http (libFuzzer, clang) and replay_http (any compiler) by
 * tests/fuzz.cmake; seeds in tests/fuzz/corpus/http, tokens in http.dict.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http.h"
#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HANG_SECONDS 10.0

static struct MHD_Daemon *daemon_;
static char base[64] = "";
static int verbose; /* DEMIX_FUZZ_VERBOSE: logs on stderr, responses on stdout */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "fuzz_http: %s: %s\n", what, strerror(errno));
    abort();
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) die(path);
}

/* Removes the temporary folders at exit (they are empty but for the store
 * and the model file when no request is in flight). */
static void cleanup(void) {
    if (!base[0]) return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_http: could not remove %s\n", base);
}

static void setup(void) {
    if (daemon_) return;
    snprintf(base, sizeof base, "/tmp/demix-fuzz-http.XXXXXX");
    if (!mkdtemp(base)) die("mkdtemp");
    atexit(cleanup);
    static char data_dir[128], repo[128], p[256];
    snprintf(data_dir, sizeof data_dir, "%s/data", base);
    snprintf(repo, sizeof repo, "%s/repo", base);
    if (mkdir(data_dir, 0755) || mkdir(repo, 0755)) die("mkdir");
    snprintf(p, sizeof p, "%s/uploads", data_dir);
    if (mkdir(p, 0755)) die("mkdir uploads");
    snprintf(p, sizeof p, "%s/jobs", data_dir);
    if (mkdir(p, 0755)) die("mkdir jobs");
    /* The default model name resolves, so uploads get as far as decoding. */
    const char *model = getenv("DEMIX_FUZZ_MODEL");
    snprintf(p, sizeof p, "%s/htdemucs.th", repo);
    if (model && *model) {
        if (symlink(model, p)) die("symlink DEMIX_FUZZ_MODEL");
    } else {
        write_text(p, "not a checkpoint\n");
    }
    snprintf(p, sizeof p, "%s/bag.yaml", repo);
    write_text(p, "models: ['htdemucs']\n");

    /* As serve.c sets it up, with limits that keep runs small. */
    srv_config *c = &srv_cfg;
    srv_config_defaults(c);
    c->host = "127.0.0.1";
    c->repo = repo;
    c->data_dir = data_dir;
    c->workers = 1;
    c->max_upload_bytes = 1 << 20;
    c->queue_max = 4;
    c->ttl_seconds = 86400;
    c->job_timeout_seconds = 5;
    c->idle_timeout_seconds = 5;
    c->max_duration_seconds = 3600;
    c->rate_per_minute = 6e5; /* the limiter runs but never refuses */
    c->rate_burst = 1000;
    c->trusted_proxies = "10.0.0.1, 127.0.0.1";
    c->breaker_threshold = 1000;
    c->breaker_open_seconds = 0.1;
    c->breaker_probes = 1;
    c->retries = 0;
    c->metrics_interval_seconds = 15;
    c->api_key = "fuzz-key";
    c->log_level = DMX_LOG_DEBUG;
    verbose = getenv("DEMIX_FUZZ_VERBOSE") != NULL;
    if (!verbose) {
        /* log.c writes to stderr; libFuzzer and the sanitizers keep the
         * real one (they hold their own FILE / write to fd 2). */
        FILE *null = fopen("/dev/null", "w");
        if (null) stderr = null;
    }
    signal(SIGPIPE, SIG_IGN);
    srv_start_time = srv_now();
    srv_log_configure(0, c->log_level);
    dmx_log_set(srv_engine_log, NULL);
    srv_metrics_init(c->max_upload_bytes);
    if (srv_jobs_start(c->workers, c->queue_max) < 0) die("srv_jobs_start");
    /* Stopped at once: submissions are refused (queue_full), so no separation
     * runs and no job outlives the request that made it. */
    srv_jobs_stop(0);
    int port = 0;
    daemon_ = srv_http_start(c->host, 0, 0, &port);
    if (!daemon_) die("srv_http_start");
}

static unsigned connections(void) {
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return di ? di->num_connections : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) die("socketpair");
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_port = htons(40000);
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (MHD_add_connection(daemon_, sv[1], (const struct sockaddr *)&peer, sizeof peer) !=
        MHD_YES) {
        /* MHD closed sv[1]. */
        close(sv[0]);
        die("MHD_add_connection");
    }
    int fd = sv[0];
    if (fcntl(fd, F_SETFL, O_NONBLOCK)) die("fcntl");
    /* Write and read at once: a large body must not block on a full socket
     * while the daemon waits for us to take its response. */
    size_t off = 0;
    int wr_open = 1;
    char buf[65536];
    double t0 = now();
    for (;;) {
        if (wr_open && off == size) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        struct pollfd pfd = {fd, (short)(POLLIN | (wr_open ? POLLOUT : 0)), 0};
        int n = poll(&pfd, 1, 100);
        if (n < 0 && errno != EINTR) die("poll");
        if (now() - t0 > HANG_SECONDS) {
            fprintf(stderr, "fuzz_http: the connection is still open after %g s\n", HANG_SECONDS);
            abort();
        }
        if (n <= 0) continue;
        if (wr_open && (pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (w > 0) off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) off = size; /* peer gone */
        }
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r > 0 && verbose) fwrite(buf, 1, (size_t)r, stdout);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break; /* closed */
        }
    }
    close(fd);
    /* The daemon frees the connection (and our request state, on_completed)
     * in its own threads: wait for that, so the next input starts clean and
     * leak checks see nothing in flight. */
    while (connections() > 0) {
        if (now() - t0 > HANG_SECONDS) {
            fprintf(stderr, "fuzz_http: the daemon still holds the connection after %g s\n",
                    HANG_SECONDS);
            abort();
        }
        usleep(100);
    }
    return 0;
}
