/*
 * progress.c - everything the CLI writes to the terminal: messages, warnings,
 * errors and the progress display.
 *
 * Messages and progress share one lock because on a TTY the bars live at the
 * bottom of stderr and are redrawn in place: every message first erases the
 * bars, prints, then redraws them, so concurrent jobs never interleave half
 * lines. When stderr is not a TTY (a log file, CI) the bars would be noise,
 * so each job prints a plain line at most every 5 % or 10 s instead.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

typedef struct slot {
    int active;
    char label[96];
    progress_unit unit;
    int64_t done, total;
    int64_t done0; /* bytes already there when a resumed download started */
    int seen;      /* an update arrived */
    double t0;
    double last_line_t;    /* plain mode: when the last line was printed */
    double last_line_frac; /* plain mode: fraction shown by it */
    int finished_line;     /* plain mode: 100 % already printed */
} slot;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static slot *g_slots;
static int g_nslots;
static int g_tty;          /* draw bars (stderr is a terminal, not quiet) */
static int g_drawn;        /* bar lines currently on screen */
static double g_last_draw; /* throttles redraws */

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_format_duration(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 360000) { /* NaN, negative or silly: unknown */
        snprintf(buf, n, "--:--");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

static int term_width(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    const char *c = getenv("COLUMNS");
    int w = c ? atoi(c) : 0;
    return w >= 20 ? w : 80;
}

/* Copies at most `max` bytes of s, cutting on a UTF-8 character boundary and
 * marking the cut with "~" so long file names stay recognisable. */
static void fit_label(char *dst, size_t dstlen, const char *s, size_t max) {
    size_t len = strlen(s);
    if (max >= dstlen) max = dstlen - 1;
    if (len <= max) {
        memcpy(dst, s, len + 1);
        return;
    }
    size_t cut = max > 1 ? max - 1 : 0;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
    memcpy(dst, s, cut);
    dst[cut] = '~';
    dst[cut + 1] = '\0';
}

/* "12/40 segments" or "36.1/80.2 MiB" */
static void format_counts(const slot *s, char *buf, size_t n) {
    if (s->unit == PROGRESS_BYTES) {
        char a[32], b[32];
        format_bytes(s->done, a, sizeof a);
        if (s->total > 0) {
            format_bytes(s->total, b, sizeof b);
            snprintf(buf, n, "%s/%s", a, b);
        } else {
            snprintf(buf, n, "%s", a);
        }
    } else if (s->total > 0) {
        snprintf(buf, n, "%lld/%lld segments", (long long)s->done, (long long)s->total);
    } else {
        snprintf(buf, n, "starting"); /* before the first segment reports */
    }
}

static double slot_frac(const slot *s) {
    if (s->total <= 0) return -1;
    double f = (double)s->done / (double)s->total;
    return f < 0 ? 0 : f > 1 ? 1 : f;
}

/* ETA from the average rate so far; unknown until something is done. The
 * part of a resumed download that was already there took no time now. */
static double slot_eta(const slot *s, double now) {
    if (s->total <= 0) return -1;
    int64_t did = s->done - s->done0, left = s->total - s->done;
    if (did <= 0) return left <= 0 ? 0 : -1;
    return (now - s->t0) * (double)left / (double)did;
}

static void draw_one(const slot *s, double now, int width) {
    char label[96], counts[64], el[32], eta[32], line[512];
    int labw = width >= 100 ? 32 : width >= 70 ? 22 : 14;
    fit_label(label, sizeof label, s->label, (size_t)labw);
    format_counts(s, counts, sizeof counts);
    cli_format_duration(now - s->t0, el, sizeof el);
    cli_format_duration(slot_eta(s, now), eta, sizeof eta);
    double f = slot_frac(s);
    /* Room left for the bar after the fixed fields. */
    int fixed = labw + 2 + 2 + 6 + (int)strlen(counts) + 2 + (int)strlen(el) + 3 + (int)strlen(eta);
    int barw = width - 1 - fixed;
    if (barw > 40) barw = 40;
    char bar[48];
    int nb = 0;
    if (barw >= 8) {
        int inner = barw - 2;
        int fill = f >= 0 ? (int)(f * inner + 1e-9) : 0;
        bar[nb++] = '[';
        for (int i = 0; i < inner; i++) bar[nb++] = i < fill ? '#' : '-';
        bar[nb++] = ']';
    }
    bar[nb] = '\0';
    char pct[8];
    if (f >= 0)
        snprintf(pct, sizeof pct, "%3d%%", (int)(f * 100 + 1e-9));
    else
        snprintf(pct, sizeof pct, "  ?%%");
    snprintf(line, sizeof line, "%-*s  %s%s%s  %s  %s < %s", labw, label, bar, nb ? " " : "", pct,
             counts, el, eta);
    /* Never wrap: a wrapped line would break the in-place redraw. */
    if ((int)strlen(line) > width - 1) line[width - 1] = '\0';
    fputs(line, stderr);
}

/* Erases the bars; the cursor ends at the start of the first bar line. */
static void clear_bars(void) {
    if (!g_tty || g_drawn == 0) return;
    fputs("\r\033[K", stderr);
    for (int i = 1; i < g_drawn; i++) fputs("\033[A\033[K", stderr);
    g_drawn = 0;
}

static void draw_bars(void) {
    if (!g_tty) return;
    double now = cli_now();
    int width = term_width();
    int n = 0;
    for (int i = 0; i < g_nslots; i++) {
        if (!g_slots[i].active) continue;
        if (n) fputc('\n', stderr);
        draw_one(&g_slots[i], now, width);
        n++;
    }
    g_drawn = n;
    g_last_draw = now;
    fflush(stderr);
}

static void vmessage(FILE *f, const char *prefix, const char *fmt, va_list ap) {
    pthread_mutex_lock(&g_lock);
    clear_bars();
    if (f == stdout) fflush(stderr);
    if (prefix) fputs(prefix, f);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
    draw_bars();
    pthread_mutex_unlock(&g_lock);
}

void cli_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(stderr, "demix: ", fmt, ap);
    va_end(ap);
}

void cli_warn(const char *fmt, ...) {
    if (cli_verbosity < 0) return;
    va_list ap;
    va_start(ap, fmt);
    vmessage(stderr, "demix: warning: ", fmt, ap);
    va_end(ap);
}

void cli_info(const char *fmt, ...) {
    if (cli_verbosity < 0) return;
    va_list ap;
    va_start(ap, fmt);
    vmessage(stdout, NULL, fmt, ap);
    va_end(ap);
}

void cli_debug(const char *fmt, ...) {
    if (cli_verbosity < 1) return;
    va_list ap;
    va_start(ap, fmt);
    vmessage(stderr, "demix: ", fmt, ap);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cmd)
        cli_err("%s (see 'demix %s --help')", msg, cmd);
    else
        cli_err("%s (see 'demix --help')", msg);
    return EXIT_USAGE;
}

void cli_log_sink(void *user, dmx_log_level level, const char *msg) {
    (void)user;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", msg ? msg : "");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    if (!n) return;
    /* Errors also come back to us as a status that we report ourselves, so
     * the library's own error lines only add detail worth seeing with -v. */
    /* FFmpeg warns about every oddity of a file ("Header missing",
     * "Estimating duration from bitrate"); for a file that decodes that is
     * noise, and for one that does not our own error says it, so FFmpeg's
     * lines are kept for -v. */
    int from_ffmpeg = !strncmp(buf, "ffmpeg:", 7);
    if (level >= DMX_LOG_WARN && ((level == DMX_LOG_WARN && !from_ffmpeg) || cli_verbosity > 0))
        cli_warn("%s", buf);
    else
        cli_debug("%s", buf);
}

/* ---- progress ---------------------------------------------------------------- */

void progress_init(int n_slots) {
    pthread_mutex_lock(&g_lock);
    free(g_slots);
    g_nslots = n_slots > 0 ? n_slots : 1;
    g_slots = xcalloc((size_t)g_nslots, sizeof *g_slots);
    /* TERM=dumb terminals cannot move the cursor. */
    const char *term = getenv("TERM");
    g_tty = cli_verbosity >= 0 && isatty(STDERR_FILENO) && !(term && !strcmp(term, "dumb"));
    g_drawn = 0;
    pthread_mutex_unlock(&g_lock);
}

void progress_start(int slot_i, const char *label, progress_unit unit) {
    if (cli_verbosity < 0 || slot_i < 0 || slot_i >= g_nslots) return;
    pthread_mutex_lock(&g_lock);
    slot *s = &g_slots[slot_i];
    memset(s, 0, sizeof *s);
    s->active = 1;
    snprintf(s->label, sizeof s->label, "%s", label);
    s->unit = unit;
    s->t0 = s->last_line_t = cli_now();
    if (g_tty) {
        clear_bars();
        draw_bars();
    }
    pthread_mutex_unlock(&g_lock);
}

static void plain_line(slot *s, double now) {
    char counts[64], el[32], eta[32];
    format_counts(s, counts, sizeof counts);
    cli_format_duration(now - s->t0, el, sizeof el);
    double f = slot_frac(s);
    if (f >= 0 && f < 1) {
        cli_format_duration(slot_eta(s, now), eta, sizeof eta);
        fprintf(stderr, "%s: %3d%% (%s), %s elapsed, %s left\n", s->label, (int)(f * 100 + 1e-9),
                counts, el, eta);
    } else if (f >= 1) {
        fprintf(stderr, "%s: 100%% (%s), %s elapsed\n", s->label, counts, el);
    } else {
        fprintf(stderr, "%s: %s, %s elapsed\n", s->label, counts, el);
    }
    fflush(stderr);
}

void progress_update(int slot_i, int64_t done, int64_t total) {
    if (cli_verbosity < 0 || slot_i < 0 || slot_i >= g_nslots) return;
    pthread_mutex_lock(&g_lock);
    slot *s = &g_slots[slot_i];
    if (!s->active) {
        pthread_mutex_unlock(&g_lock);
        return;
    }
    if (!s->seen && s->unit == PROGRESS_BYTES) s->done0 = done;
    s->seen = 1;
    s->done = done;
    s->total = total;
    double now = cli_now();
    double f = slot_frac(s);
    if (g_tty) {
        /* ~10 redraws a second is smooth and costs nothing. */
        if (now - g_last_draw >= 0.1 || (total > 0 && done >= total)) {
            clear_bars();
            draw_bars();
        }
    } else if (!s->finished_line) {
        int finished = total > 0 && done >= total;
        if (finished || now - s->last_line_t >= 10.0 ||
            (f >= 0 && f - s->last_line_frac >= 0.05 - 1e-9)) {
            plain_line(s, now);
            s->last_line_t = now;
            s->last_line_frac = f;
            s->finished_line = finished;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

void progress_end(int slot_i) {
    if (slot_i < 0 || slot_i >= g_nslots) return;
    pthread_mutex_lock(&g_lock);
    if (g_slots[slot_i].active) {
        clear_bars();
        g_slots[slot_i].active = 0;
        draw_bars();
    }
    pthread_mutex_unlock(&g_lock);
}

void progress_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    clear_bars();
    fflush(stderr);
    free(g_slots);
    g_slots = NULL;
    g_nslots = 0;
    g_tty = 0;
    pthread_mutex_unlock(&g_lock);
}
