/*
 * httpd.c - a tiny HTTP/1.1 file server for the `demix models fetch` tests.
 * It listens on 127.0.0.1 only, on a free port it picks itself (written to
 * --port-file), serves one connection at a time, and can misbehave on
 * purpose: drop the connection midway, ignore Range, or stall. It exits by
 * itself after --lifetime seconds so a failed test never leaves it behind.
 *
 *   demix_test_httpd --root DIR --port-file FILE [--log FILE]
 *       [--drop-after BYTES [--drop-count N]] [--ignore-range]
 *       [--stall-after BYTES] [--lifetime SECONDS]
 *
 * Each request is logged as "GET /name range=<Range header or -> status
 * <code> sent <bytes>".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *g_root, *g_log;
static long long g_drop_after = -1, g_stall_after = -1;
static int g_drop_count = 1, g_ignore_range;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void logf_line(const char *path, const char *range, int status, long long sent) {
    if (!g_log) return;
    FILE *f = fopen(g_log, "a");
    if (!f) return;
    fprintf(f, "GET %s range=%s status %d sent %lld\n", path, range[0] ? range : "-", status, sent);
    fclose(f);
}

static int send_all(int fd, const char *buf, size_t n) {
    while (n) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static void simple_response(int fd, int status, const char *reason, const char *extra) {
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n%s\r\n", status,
                     reason, extra ? extra : "");
    send_all(fd, hdr, (size_t)n);
}

/* Waits (bounded) until the client goes away: a stalled transfer. */
static void stall(int fd, double deadline) {
    char buf[256];
    while (now() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (r > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return;
        }
    }
}

static void handle(int fd, double deadline) {
    char req[8192];
    size_t len = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (len < sizeof req - 1) {
        ssize_t n = recv(fd, req + len, sizeof req - 1 - len, 0);
        if (n <= 0) return;
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n")) break;
    }
    char method[16], target[1024];
    if (sscanf(req, "%15s %1023s", method, target) != 2) {
        simple_response(fd, 400, "Bad Request", NULL);
        return;
    }
    char range[128] = "";
    for (char *line = strstr(req, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (!strncasecmp(line + 2, "Range:", 6)) {
            const char *v = line + 8;
            while (*v == ' ') v++;
            size_t k = strcspn(v, "\r\n");
            if (k >= sizeof range) k = sizeof range - 1;
            memcpy(range, v, k);
            range[k] = '\0';
        }
    }
    if (strcmp(method, "GET") || target[0] != '/' || strstr(target, "..") ||
        strchr(target + 1, '/')) {
        logf_line(target, range, 404, 0);
        simple_response(fd, 404, "Not Found", NULL);
        return;
    }
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", g_root, target + 1);
    int ffd = open(path, O_RDONLY);
    struct stat st;
    if (ffd < 0 || fstat(ffd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (ffd >= 0) close(ffd);
        logf_line(target, range, 404, 0);
        simple_response(fd, 404, "Not Found", NULL);
        return;
    }
    long long size = st.st_size, start = 0, end = size - 1;
    int status = 200;
    if (range[0] && !g_ignore_range) {
        long long a = -1, b = -1;
        if (sscanf(range, "bytes=%lld-%lld", &a, &b) >= 1 && a >= 0) {
            if (a >= size) {
                char extra[64];
                snprintf(extra, sizeof extra, "Content-Range: bytes */%lld\r\n", size);
                logf_line(target, range, 416, 0);
                simple_response(fd, 416, "Range Not Satisfiable", extra);
                close(ffd);
                return;
            }
            start = a;
            if (b >= a && b < size) end = b;
            status = 206;
        }
    }
    char hdr[512];
    int n;
    if (status == 206)
        n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 206 Partial Content\r\nContent-Length: %lld\r\nContent-Range: bytes "
                     "%lld-%lld/%lld\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                     end - start + 1, start, end, size);
    else
        n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n%sConnection: close\r\n\r\n", size,
                     g_ignore_range ? "" : "Accept-Ranges: bytes\r\n");
    long long sent = 0;
    if (send_all(fd, hdr, (size_t)n) == 0) {
        long long limit = end - start + 1;
        int drop = g_drop_after >= 0 && g_drop_count > 0;
        if (drop && g_drop_after < limit) limit = g_drop_after;
        if (g_stall_after >= 0 && g_stall_after < limit) limit = g_stall_after;
        char buf[65536];
        while (sent < limit) {
            size_t want = (size_t)(limit - sent < (long long)sizeof buf ? limit - sent : (long long)sizeof buf);
            ssize_t r = pread(ffd, buf, want, start + sent);
            if (r <= 0) break;
            if (send_all(fd, buf, (size_t)r) != 0) break;
            sent += r;
        }
        if (drop) g_drop_count--;
        if (g_stall_after >= 0 && sent < end - start + 1) stall(fd, deadline);
    }
    logf_line(target, range, status, sent);
    close(ffd);
}

int main(int argc, char **argv) {
    const char *port_file = NULL;
    double lifetime = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--root") && v) g_root = argv[++i];
        else if (!strcmp(a, "--port-file") && v) port_file = argv[++i];
        else if (!strcmp(a, "--log") && v) g_log = argv[++i];
        else if (!strcmp(a, "--drop-after") && v) g_drop_after = atoll(argv[++i]);
        else if (!strcmp(a, "--drop-count") && v) g_drop_count = atoi(argv[++i]);
        else if (!strcmp(a, "--stall-after") && v) g_stall_after = atoll(argv[++i]);
        else if (!strcmp(a, "--ignore-range")) g_ignore_range = 1;
        else if (!strcmp(a, "--lifetime") && v) lifetime = atof(argv[++i]);
        else {
            fprintf(stderr, "demix_test_httpd: bad argument %s\n", a);
            return 2;
        }
    }
    if (!g_root || !port_file) {
        fprintf(stderr, "demix_test_httpd: --root and --port-file are required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0; /* the kernel picks a free port */
    socklen_t alen = sizeof addr;
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 16) != 0 ||
        getsockname(s, (struct sockaddr *)&addr, &alen) != 0) {
        perror("demix_test_httpd");
        return 1;
    }
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        perror(tmp);
        return 1;
    }
    fprintf(f, "%d\n", ntohs(addr.sin_port));
    fclose(f);
    rename(tmp, port_file); /* appears whole, so the test never reads half a number */

    double deadline = now() + lifetime;
    while (now() < deadline) {
        struct pollfd p = {s, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (r <= 0) continue;
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        handle(c, deadline);
        close(c);
    }
    close(s);
    return 0;
}
