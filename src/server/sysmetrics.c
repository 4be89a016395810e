/*
 * sysmetrics.c - the host gauges of `demix serve` (CPU, memory, the data
 * folder's disk and files), sampled by one background thread every
 * --metrics-interval seconds rather than on each scrape: walking the data
 * folder costs a directory scan per job, and a scrape must stay cheap.
 * Each sample is also logged (event_type "system_metrics") so the logs
 * alone show the host's state around an incident.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "server.h"

static pthread_mutex_t sys_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sys_cv = PTHREAD_COND_INITIALIZER;
static srv_sys_sample latest;
static int sys_stop, sys_running;
static pthread_t sys_thread;

void srv_sysmetrics_get(srv_sys_sample *out) {
    pthread_mutex_lock(&sys_lock);
    *out = latest;
    pthread_mutex_unlock(&sys_lock);
}

/* Busy and total jiffies of all CPUs from /proc/stat. */
static int read_cpu(unsigned long long *busy, unsigned long long *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4) return -1;
    *total = 0;
    for (int i = 0; i < 8; i++) *total += v[i];
    *busy = *total - v[3] - v[4]; /* minus idle and iowait */
    return 0;
}

static void read_mem(srv_sys_sample *s) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return;
    char line[256];
    double total = 0, avail = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) total = (double)kb * 1024;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = (double)kb * 1024;
    }
    fclose(f);
    s->mem_avail = avail;
    s->mem_used = total - avail;
    s->mem_percent = total > 0 ? 100 * (total - avail) / total : 0;
}

/* Files and bytes below dir, `depth` levels down (uploads/ is flat,
 * jobs/ID/ one level deeper). */
static void count_files(const char *dir, int depth, srv_sys_sample *s) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0) continue;
        struct stat st;
        if (lstat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode) && depth > 0) {
                count_files(p, depth - 1, s);
            } else if (S_ISREG(st.st_mode)) {
                s->temp_files++;
                s->temp_bytes += (int64_t)st.st_size;
            }
        }
        free(p);
    }
    if (d) closedir(d);
}

static void sample(srv_sys_sample *s, unsigned long long *busy0, unsigned long long *total0) {
    unsigned long long busy, total;
    if (read_cpu(&busy, &total) == 0) {
        if (total > *total0)
            s->cpu_percent = 100.0 * (double)(busy - *busy0) / (double)(total - *total0);
        *busy0 = busy;
        *total0 = total;
    }
    read_mem(s);
    struct statvfs v;
    if (statvfs(srv_cfg.data_dir, &v) == 0) {
        s->disk_free = (double)v.f_bavail * (double)v.f_frsize;
        s->disk_used = (double)(v.f_blocks - v.f_bfree) * (double)v.f_frsize;
        s->disk_low = s->disk_free < (double)srv_cfg.min_free_disk_bytes;
    }
    char *p = NULL;
    if (asprintf(&p, "%s/uploads", srv_cfg.data_dir) >= 0) count_files(p, 0, s);
    free(p);
    if (asprintf(&p, "%s/jobs", srv_cfg.data_dir) >= 0) count_files(p, 1, s);
    free(p);
}

static int wait_for(double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + seconds;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&sys_lock);
    while (!sys_stop && pthread_cond_timedwait(&sys_cv, &sys_lock, &ts) == 0) {}
    int stop = sys_stop;
    pthread_mutex_unlock(&sys_lock);
    return stop;
}

static void *sys_main(void *arg) {
    (void)arg;
    unsigned long long busy0 = 0, total0 = 0;
    read_cpu(&busy0, &total0);
    /* The first CPU figure needs an interval: a short one, so the gauges
     * are filled soon after start-up. */
    double every = srv_cfg.metrics_interval_seconds;
    if (wait_for(every < 1 ? every : 1)) return NULL;
    for (;;) {
        srv_sys_sample s = {0};
        sample(&s, &busy0, &total0);
        pthread_mutex_lock(&sys_lock);
        latest = s;
        pthread_mutex_unlock(&sys_lock);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddNumberToObject(f, "cpu_usage_percent", s.cpu_percent);
        cJSON_AddNumberToObject(f, "memory_usage_bytes", s.mem_used);
        cJSON_AddNumberToObject(f, "memory_available_bytes", s.mem_avail);
        cJSON_AddNumberToObject(f, "memory_percent", s.mem_percent);
        cJSON_AddNumberToObject(f, "disk_usage_bytes", s.disk_used);
        cJSON_AddNumberToObject(f, "disk_free_bytes", s.disk_free);
        cJSON_AddNumberToObject(f, "temp_files", (double)s.temp_files);
        cJSON_AddNumberToObject(f, "temp_storage_bytes", (double)s.temp_bytes);
        cJSON_AddNumberToObject(f, "active_sessions", srv_jobs_active());
        cJSON_AddNumberToObject(f, "queue_depth", srv_jobs_queue_depth());
        srv_log(DMX_LOG_INFO, "demix.system", "system_metrics", NULL, f, "system metrics");
        srv_log_flush(); /* engine lines the rate limit dropped since */
        if (wait_for(every)) break;
    }
    return NULL;
}

int srv_sysmetrics_start(void) {
    if (pthread_create(&sys_thread, NULL, sys_main, NULL)) return -1;
    sys_running = 1;
    return 0;
}

void srv_sysmetrics_stop(void) {
    if (!sys_running) return;
    pthread_mutex_lock(&sys_lock);
    sys_stop = 1;
    pthread_cond_broadcast(&sys_cv);
    pthread_mutex_unlock(&sys_lock);
    pthread_join(sys_thread, NULL);
    sys_running = 0;
}
