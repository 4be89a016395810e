/*
 * separate.c - `demix separate`: upstream Demucs's command line (same flags,
 * defaults and output naming) on top of the demix engine and audio module.
 *
 * Per track, the shared streaming pipeline (pipeline.h; memory does not grow
 * with the song): decode at the model's rate and channel count, separate with
 * the whole-track normalisation upstream's Separator does, derive the
 * two-stem outputs, apply the clip mode to each stem (upstream's
 * prevent_clip), and encode. A track either gets
 * all of its stems or none: every stem is written to a ".part" file by the
 * encoder and only renamed once all of them are complete; if anything fails,
 * stems already renamed and directories we created are removed again.
 *
 * -j N runs N tracks at once, each on its own dmx_session over the one shared
 * read-only model, with the cores split between them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "demix/repo.h"
#include "demix/audio.h"
#include "demix/pipeline.h"

/* the pipeline's enums under the CLI's short names */
enum { OM_ADD = DMX_OTHER_ADD, OM_MINUS = DMX_OTHER_MINUS, OM_NONE = DMX_OTHER_NONE };
enum { CLIP_RESCALE = DMX_CLIP_RESCALE, CLIP_CLAMP = DMX_CLIP_CLAMP, CLIP_NONE = DMX_CLIP_NONE };

typedef struct sep_cfg {
    const char *name, *repo, *out, *filename, *two_stems;
    int other_method, clip_mode;
    int shifts, split, jobs, threads;
    uint64_t seed;
    double overlap, segment;
    dmx_audio_format fmt;
} sep_cfg;

typedef struct track {
    char *path;
    char *track, *trackext; /* file name before / after its last '.' */
    char **outs;            /* one output path per output stem */
    int failed;
} track;

typedef struct run {
    const sep_cfg *cfg;
    const dmx_model *model;
    track *tracks;
    size_t n_tracks;
    const char **stems; /* output stem names */
    int n_stems;
    int n_threads;      /* compute threads per job */
    atomic_size_t next; /* next track to take */
    atomic_int n_ok, n_failed;
} run;

/* Serialises directory creation and cleanup between jobs, so one job never
 * removes a directory another has just found to exist. */
static pthread_mutex_t g_dir_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- output names ------------------------------------------------------------ */

/* Expands upstream's --filename template: {track}, {trackext}, {stem}, {ext};
 * "{{" and "}}" are literal braces as in Python's str.format. Returns NULL
 * and fills err for anything else (upstream would raise). */
static char *expand_template(const char *t, const char *track, const char *trackext,
                             const char *stem, const char *ext, char *err, size_t errlen) {
    static const char *keys[] = {"track", "trackext", "stem", "ext"};
    const char *vals[] = {track, trackext, stem, ext};
    size_t cap = strlen(t) + 256, len = 0;
    char *out = xmalloc(cap);
#define PUT(s, n)                     \
    do {                              \
        size_t n_ = (n);              \
        if (len + n_ + 1 > cap) {     \
            cap = 2 * (len + n_ + 1); \
            out = realloc(out, cap);  \
            if (!out) abort();        \
        }                             \
        memcpy(out + len, (s), n_);   \
        len += n_;                    \
    } while (0)
    for (const char *p = t; *p;) {
        if (p[0] == '{' && p[1] == '{') {
            PUT("{", 1);
            p += 2;
        } else if (p[0] == '}' && p[1] == '}') {
            PUT("}", 1);
            p += 2;
        } else if (*p == '}') {
            snprintf(err, errlen, "single '}' in --filename '%s' (write '}}' for a brace)", t);
            free(out);
            return NULL;
        } else if (*p == '{') {
            const char *end = strchr(p, '}');
            size_t klen = end ? (size_t)(end - p - 1) : 0;
            int k = -1;
            for (int i = 0; end && i < 4; i++)
                if (strlen(keys[i]) == klen && !strncmp(p + 1, keys[i], klen)) k = i;
            if (k < 0) {
                snprintf(err, errlen,
                         "--filename '%s': unknown field %.*s (use {track}, {trackext}, {stem}, "
                         "{ext}; '{{' for a brace)",
                         t, end ? (int)(end - p + 1) : (int)strlen(p), p);
                free(out);
                return NULL;
            }
            PUT(vals[k], strlen(vals[k]));
            p = end + 1;
        } else {
            PUT(p, 1);
            p++;
        }
    }
    out[len] = '\0';
#undef PUT
    return out;
}

/* Upstream splits the file name with rsplit(".", 1): "a.b.wav" -> ("a.b",
 * "wav"), and a name without a dot gives the whole name for both. */
static void split_track_name(const char *path, char **name, char **ext) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot) {
        *name = xstrdup(base);
        *ext = xstrdup(base);
    } else {
        *name = xasprintf("%.*s", (int)(dot - base), base);
        *ext = xstrdup(dot + 1);
    }
}

/* ---- track list ----------------------------------------------------------------- */

/* Extensions taken from a folder: what FFmpeg commonly decodes as audio. A
 * folder often holds cover art, cue sheets and notes, which are skipped. */
static int has_audio_extension(const char *name) {
    static const char *exts[] = {"wav", "wave", "flac", "mp3",  "ogg",  "oga",  "opus", "m4a",
                                 "mp4", "aac",  "wma",  "aif",  "aiff", "aifc", "alac", "ape",
                                 "wv",  "mka",  "mkv",  "webm", "caf",  "au",   "snd",  "mp2",
                                 "ac3", "w64",  "rf64", "tta",  "mpc",  "spx",  "amr",  "mov"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (!strcasecmp(dot + 1, exts[i])) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_track(track **v, size_t *n, size_t *cap, const char *path) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *v = realloc(*v, *cap * sizeof **v);
        if (!*v) abort();
    }
    track *t = &(*v)[(*n)++];
    memset(t, 0, sizeof *t);
    t->path = xstrdup(path);
    split_track_name(path, &t->track, &t->trackext);
}

/* Expands the positional arguments: files as given, folders into their audio
 * files (sorted, not recursive). Missing paths are reported and counted. */
static track *collect_tracks(char **args, int n_args, size_t *n_out, int *n_missing) {
    track *v = NULL;
    size_t n = 0, cap = 0;
    *n_missing = 0;
    for (int i = 0; i < n_args; i++) {
        struct stat st;
        if (stat(args[i], &st) != 0) {
            cli_err("%s: %s", args[i], strerror(errno));
            (*n_missing)++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            add_track(&v, &n, &cap, args[i]);
            continue;
        }
        DIR *d = opendir(args[i]);
        if (!d) {
            cli_err("%s: %s", args[i], strerror(errno));
            (*n_missing)++;
            continue;
        }
        char **names = NULL;
        size_t nn = 0, nc = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' || !has_audio_extension(e->d_name)) continue;
            char *p = path_join(args[i], e->d_name);
            int reg = stat(p, &st) == 0 && S_ISREG(st.st_mode);
            if (reg) {
                if (nn == nc) {
                    nc = nc ? 2 * nc : 16;
                    names = realloc(names, nc * sizeof *names);
                    if (!names) abort();
                }
                names[nn++] = p;
            } else {
                free(p);
            }
        }
        closedir(d);
        if (nn == 0) {
            cli_err("%s: no audio files in this folder", args[i]);
            (*n_missing)++;
        }
        if (nn) qsort(names, nn, sizeof *names, cmp_str);
        for (size_t k = 0; k < nn; k++) {
            add_track(&v, &n, &cap, names[k]);
            free(names[k]);
        }
        free(names);
    }
    *n_out = n;
    return v;
}

/* ---- one track -------------------------------------------------------------------- */

typedef struct prog_ctx {
    int slot;
} prog_ctx;

static int on_progress(void *user, int64_t done, int64_t total) {
    prog_ctx *p = user;
    progress_update(p->slot, done, total);
    return atomic_load(&cli_cancel) != 0;
}

static void remove_created_dirs(char **dirs, size_t n) {
    pthread_mutex_lock(&g_dir_lock);
    for (size_t i = n; i-- > 0;) rmdir(dirs[i]); /* only empty ones go */
    pthread_mutex_unlock(&g_dir_lock);
}

/* ---- one track ------------------------------------------------------------------ */

/* Separates one track through the shared streaming pipeline (pipeline.h):
 * memory does not grow with the song, and a failed track leaves no stems.
 * Returns 1 on success. */
static int do_track(run *r, dmx_session *sess, track *t, int slot) {
    const sep_cfg *cfg = r->cfg;
    double t0 = cli_now();
    int ok = 0;
    char **dirs = NULL;
    size_t n_dirs = 0;

    cli_info("Separating track %s", t->path);
    for (int s = 0; s < r->n_stems; s++) {
        char *dir = xstrdup(t->outs[s]);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            pthread_mutex_lock(&g_dir_lock);
            int e = mkdir_p(dir, &dirs, &n_dirs);
            int err = errno;
            pthread_mutex_unlock(&g_dir_lock);
            if (e != 0) {
                cli_err("%s: cannot create %s: %s", t->path, dir, strerror(err));
                free(dir);
                goto done;
            }
        }
        free(dir);
    }

    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = cfg->shifts;
    o.seed = cfg->seed;
    o.overlap = cfg->overlap;
    o.segment = cfg->segment;
    o.split = cfg->split;
    o.n_threads = r->n_threads;
    prog_ctx pc = {slot};
    o.progress = on_progress;
    o.progress_user = &pc;
    o.cancel = &cli_cancel;
    dmx_file_job job = {t->path,
                        cfg->two_stems,
                        (dmx_other_method)cfg->other_method,
                        (dmx_clip_mode)cfg->clip_mode,
                        cfg->fmt,
                        (const char *const *)t->outs,
                        r->n_stems,
                        0 /* no length limit */};
    const char *base = strrchr(t->path, '/') ? strrchr(t->path, '/') + 1 : t->path;
    progress_start(slot, base, PROGRESS_SEGMENTS);
    int64_t n = 0;
    dmx_status st = dmx_separate_file(sess, &job, &o, &n);
    progress_end(slot);
    if (st != DMX_OK) {
        const char *d = dmx_last_error();
        if (st == DMX_ERR_CANCELLED || atomic_load(&cli_cancel))
            cli_err("%s: interrupted", t->path);
        else if (st == DMX_ERR_IO || st == DMX_ERR_DECODE)
            cli_err("%s", *d ? d : dmx_status_str(st)); /* names the file already */
        else
            cli_err("%s: %s", t->path, *d ? d : dmx_status_str(st));
        goto done;
    }
    cli_debug("%s: %lld samples (%.2f s)", t->path, (long long)n,
              (double)n / dmx_model_samplerate(r->model));
    ok = 1;
    if (cli_verbosity >= 0) {
        char el[32];
        cli_format_duration(cli_now() - t0, el, sizeof el);
        /* Upstream-style report of where the stems went. */
        char list[4096];
        list[0] = '\0';
        for (int s = 0; s < r->n_stems; s++) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "\n  %s", t->outs[s]);
        }
        cli_info("Separated %s in %s; wrote %d stem%s:%s", t->path, el, r->n_stems,
                 r->n_stems == 1 ? "" : "s", list);
    }
done:
    if (!ok) remove_created_dirs(dirs, n_dirs);
    for (size_t i = 0; i < n_dirs; i++) free(dirs[i]);
    free(dirs);
    return ok;
}

typedef struct worker_arg {
    run *r;
    int slot;
} worker_arg;

static void *worker(void *p) {
    worker_arg *w = p;
    run *r = w->r;
    dmx_session *sess = NULL;
    dmx_status st = dmx_session_new(r->model, &sess);
    if (st != DMX_OK) {
        const char *d = dmx_last_error();
        cli_err("cannot create a separation session: %s", *d ? d : dmx_status_str(st));
    }
    for (;;) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n_tracks) break;
        track *t = &r->tracks[i];
        int ok = sess && !atomic_load(&cli_cancel) && do_track(r, sess, t, w->slot);
        t->failed = !ok;
        atomic_fetch_add(ok ? &r->n_ok : &r->n_failed, 1);
    }
    dmx_session_free(sess);
    return NULL;
}

/* ---- option parsing ----------------------------------------------------------------- */

static const int MP3_BITRATES[] = {32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320};

enum {
    O_REPO = 256,
    O_FILENAME,
    O_SHIFTS,
    O_SEED,
    O_OVERLAP,
    O_SEGMENT,
    O_NO_SPLIT,
    O_TWO_STEMS,
    O_OTHER_METHOD,
    O_INT24,
    O_FLOAT32,
    O_FLAC,
    O_MP3,
    O_MP3_BITRATE,
    O_MP3_PRESET,
    O_CLIP_MODE,
    O_LIST_MODELS,
    O_VERSION,
    O_THREADS,
    O_MODEL_CONFIG,
    O_CHECKPOINT
};

static char *abs_path(const char *p) {
    if (p[0] == '/') return xstrdup(p);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return xstrdup(p);
    const char *q = p;
    while (q[0] == '.' && q[1] == '/') q += 2;
    if (!strcmp(q, ".")) return xstrdup(cwd);
    return path_join(cwd, q);
}

int cmd_separate(int argc, char **argv) {
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"sig", required_argument, NULL, 's'},
        {"repo", required_argument, NULL, O_REPO},
        {"model-config", required_argument, NULL, O_MODEL_CONFIG},
        {"checkpoint", required_argument, NULL, O_CHECKPOINT},
        {"out", required_argument, NULL, 'o'},
        {"filename", required_argument, NULL, O_FILENAME},
        {"device", required_argument, NULL, 'd'},
        {"shifts", required_argument, NULL, O_SHIFTS},
        {"seed", required_argument, NULL, O_SEED},
        {"overlap", required_argument, NULL, O_OVERLAP},
        {"segment", required_argument, NULL, O_SEGMENT},
        {"no-split", no_argument, NULL, O_NO_SPLIT},
        {"two-stems", required_argument, NULL, O_TWO_STEMS},
        {"other-method", required_argument, NULL, O_OTHER_METHOD},
        {"int24", no_argument, NULL, O_INT24},
        {"float32", no_argument, NULL, O_FLOAT32},
        {"flac", no_argument, NULL, O_FLAC},
        {"mp3", no_argument, NULL, O_MP3},
        {"mp3-bitrate", required_argument, NULL, O_MP3_BITRATE},
        {"mp3-preset", required_argument, NULL, O_MP3_PRESET},
        {"clip-mode", required_argument, NULL, O_CLIP_MODE},
        {"jobs", required_argument, NULL, 'j'},
        {"threads", required_argument, NULL, O_THREADS},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"list-models", no_argument, NULL, O_LIST_MODELS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "separate";
    sep_cfg cfg = {
        .name = "htdemucs",
        .out = "separated",
        .filename = "{track}/{stem}.{ext}",
        .other_method = OM_ADD,
        .clip_mode = CLIP_RESCALE,
        .shifts = 1,
        .split = 1,
        .jobs = 1,
        .seed = 0,
        .overlap = 0.25,
        .segment = 0,
    };
    const char *model_config = NULL, *checkpoint = NULL; /* an MSST config + its checkpoint */
    char *config_name = NULL;
    int int24 = 0, float32 = 0, flac = 0, mp3 = 0, verbose = 0, quiet = 0, list_models = 0;
    int name_given = 0, sig_given = 0;
    int seg_given = 0;
    const char *demucs_opt = NULL; /* the first Demucs-only run option given, for RoFormers */
    long mp3_bitrate = 320, mp3_preset = 2;
    const char *device = "cpu";
    long lv;
    int c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":n:s:o:d:j:vqh", longopts, NULL)) != -1) {
        switch (c) {
            case 'n':
                cfg.name = optarg;
                name_given = 1;
                break;
            case 's':
                cfg.name = optarg;
                sig_given = 1;
                break; /* one model, by signature */
            case O_REPO: cfg.repo = optarg; break;
            case O_MODEL_CONFIG: model_config = optarg; break;
            case O_CHECKPOINT: checkpoint = optarg; break;
            case 'o': cfg.out = optarg; break;
            case O_FILENAME: cfg.filename = optarg; break;
            case 'd': device = optarg; break;
            case O_SHIFTS:
                if (!demucs_opt) demucs_opt = "--shifts";
                if ((rc = parse_long_opt(cmd, "--shifts", optarg, 0, 100, &lv))) return rc;
                cfg.shifts = (int)lv;
                break;
            case O_SEED:
                if ((rc = parse_u64_opt(cmd, "--seed", optarg, &cfg.seed))) return rc;
                break;
            case O_OVERLAP:
                if (!demucs_opt) demucs_opt = "--overlap";
                if ((rc = parse_double_opt(cmd, "--overlap", optarg, 0, 1, 0, &cfg.overlap)))
                    return rc;
                break;
            case O_SEGMENT:
                if (!demucs_opt) demucs_opt = "--segment";
                if ((rc = parse_double_opt(cmd, "--segment", optarg, 0, 1e9, 1, &cfg.segment)))
                    return rc;
                if (cfg.segment <= 0) return cli_usage_error(cmd, "--segment must be positive");
                seg_given = 1;
                break;
            case O_NO_SPLIT:
                if (!demucs_opt) demucs_opt = "--no-split";
                cfg.split = 0;
                break;
            case O_TWO_STEMS: cfg.two_stems = optarg; break;
            case O_OTHER_METHOD:
                if (!strcmp(optarg, "add"))
                    cfg.other_method = OM_ADD;
                else if (!strcmp(optarg, "minus"))
                    cfg.other_method = OM_MINUS;
                else if (!strcmp(optarg, "none"))
                    cfg.other_method = OM_NONE;
                else
                    return cli_usage_error(
                        cmd, "--other-method must be add, minus or none, got '%s'", optarg);
                break;
            case O_INT24: int24 = 1; break;
            case O_FLOAT32: float32 = 1; break;
            case O_FLAC: flac = 1; break;
            case O_MP3: mp3 = 1; break;
            case O_MP3_BITRATE: {
                if ((rc = parse_long_opt(cmd, "--mp3-bitrate", optarg, 8, 640, &mp3_bitrate)))
                    return rc;
                int valid = 0;
                for (size_t i = 0; i < sizeof MP3_BITRATES / sizeof *MP3_BITRATES; i++)
                    valid |= MP3_BITRATES[i] == mp3_bitrate;
                if (!valid)
                    return cli_usage_error(
                        cmd,
                        "--mp3-bitrate %ld is not an MP3 bitrate (32, 40, 48, 56, "
                        "64, 80, 96, 112, 128, 160, 192, 224, 256 or 320)",
                        mp3_bitrate);
                break;
            }
            case O_MP3_PRESET:
                if ((rc = parse_long_opt(cmd, "--mp3-preset", optarg, 2, 7, &mp3_preset)))
                    return rc;
                break;
            case O_CLIP_MODE:
                if (!strcmp(optarg, "rescale"))
                    cfg.clip_mode = CLIP_RESCALE;
                else if (!strcmp(optarg, "clamp"))
                    cfg.clip_mode = CLIP_CLAMP;
                else if (!strcmp(optarg, "none"))
                    cfg.clip_mode = CLIP_NONE;
                else
                    return cli_usage_error(
                        cmd, "--clip-mode must be rescale, clamp or none, got '%s'", optarg);
                break;
            case 'j':
                if ((rc = parse_long_opt(cmd, "--jobs", optarg, 0, 256, &lv))) return rc;
                cfg.jobs = lv > 0 ? (int)lv : 1; /* upstream's 0 means "no extra workers" */
                break;
            case O_THREADS:
                if ((rc = parse_long_opt(cmd, "--threads", optarg, 1, 256, &lv))) return rc;
                cfg.threads = (int)lv;
                break;
            case 'v': verbose = 1; break;
            case 'q': quiet = 1; break;
            case O_LIST_MODELS: list_models = 1; break;
            case 'h': print_separate_help(stdout); return EXIT_OK;
            case O_VERSION: printf("demix %s\n", DEMIX_CLI_VERSION); return EXIT_OK;
            default: return report_getopt_error(cmd, argc, argv, c);
        }
    }

    /* Contradictions are refused up front, before any work. */
    if (verbose && quiet)
        return cli_usage_error(cmd, "--verbose and --quiet contradict each other");
    if (name_given && sig_given)
        return cli_usage_error(cmd,
                               "-n/--name and -s/--sig are mutually exclusive (as upstream's)");
    cli_verbosity = quiet ? -1 : verbose ? 1 : 0;
    if (!model_config != !checkpoint)
        return cli_usage_error(
            cmd, "--model-config and --checkpoint go together (an MSST config and its checkpoint)");
    if (model_config && (name_given || sig_given || cfg.repo))
        return cli_usage_error(
            cmd, "--model-config/--checkpoint name the model; they exclude -n, -s and --repo");
    if (int24 && float32)
        return cli_usage_error(cmd, "--int24 and --float32 contradict each other");
    if (flac && mp3) return cli_usage_error(cmd, "--flac and --mp3 contradict each other");
    if (flac && float32)
        return cli_usage_error(
            cmd, "--float32 is for WAV output; FLAC stores integers only (use --int24)");
    if (mp3 && (int24 || float32))
        return cli_usage_error(cmd,
                               "%s sets the WAV/FLAC sample format and has no meaning with --mp3",
                               int24 ? "--int24" : "--float32");
    if (!cfg.split && seg_given)
        return cli_usage_error(cmd, "--segment and --no-split contradict each other");
    if (strcasecmp(device, "cpu"))
        return cli_usage_error(
            cmd, "--device %s is not available: this build of demix runs on the CPU only", device);
    if (list_models) return models_list_upstream(cfg.repo); /* upstream's form */
    if (optind >= argc) return cli_usage_error(cmd, "no tracks given");

    dmx_audio_format_init(&cfg.fmt, mp3 ? DMX_AUDIO_MP3 : flac ? DMX_AUDIO_FLAC : DMX_AUDIO_WAV);
    cfg.fmt.depth = float32 ? DMX_DEPTH_F32 : int24 ? DMX_DEPTH_S24 : DMX_DEPTH_S16;
    cfg.fmt.mp3_bitrate = (int32_t)mp3_bitrate;
    cfg.fmt.mp3_preset = (int32_t)mp3_preset;
    const char *ext = dmx_audio_container_extension(cfg.fmt.container);

    char err[512];
    char *probe = expand_template(cfg.filename, "t", "e", "s", ext, err, sizeof err);
    if (!probe) return cli_usage_error(cmd, "%s", err);
    free(probe);

    if (!dmx_audio_container_available(cfg.fmt.container)) {
        cli_err("this build cannot write %s files (its FFmpeg lacks the encoder); available: %s",
                ext, dmx_audio_supported_formats());
        return EXIT_RUNTIME;
    }

    dmx_log_set(cli_log_sink, NULL);

    int n_missing = 0;
    size_t n_tracks = 0;
    track *tracks = collect_tracks(argv + optind, argc - optind, &n_tracks, &n_missing);
    int exit_rc = n_missing ? EXIT_RUNTIME : EXIT_OK;
    char *model_path = NULL;
    dmx_model *model = NULL;
    const char **stems = NULL;
    int n_stems = 0;
    char *base_dir = NULL, *abs_base = NULL;
    if (n_tracks == 0) goto cleanup;

    /* The model: an MSST config and checkpoint as given (named after the
     * config file, for the output folder), else by name. */
    if (model_config) {
        const char *b = strrchr(model_config, '/');
        config_name = xstrdup(b ? b + 1 : model_config);
        char *dot = strrchr(config_name, '.');
        if (dot && dot != config_name) *dot = '\0';
        cfg.name = config_name;
        model_path = xstrdup(model_config);
    } else if (demucs_opt && !cfg.repo && dmx_repo_msst_find(cfg.name)) {
        /* a registry RoFormer: refused before anything is downloaded */
        model_path = xstrdup(cfg.name);
    } else if ((rc = models_resolve(cfg.name, cfg.repo, 1, &model_path)) != EXIT_OK) {
        exit_rc = rc;
        goto cleanup;
    }
    size_t mpl = strlen(model_path);
    if (sig_given && mpl > 5 && !strcmp(model_path + mpl - 5, ".yaml")) {
        cli_err(
            "'%s' is a bag of models (%s); -s/--sig takes one model's signature, use -n for a bag",
            cfg.name, model_path);
        exit_rc = EXIT_RUNTIME;
        goto cleanup;
    }
    /* A RoFormer runs MSST's chunking (the config's chunk_size and
     * inference.num_overlap): Demucs' run options have no counterpart, so
     * asking for one is an error rather than silently ignored. */
    if (demucs_opt && (model_config || dmx_repo_is_msst_config(model_path) ||
                       (!cfg.repo && dmx_repo_msst_find(cfg.name)))) {
        exit_rc = cli_usage_error(
            cmd,
            "%s does not apply to %s, a RoFormer: it runs MSST's chunking with its config's "
            "chunk_size and inference.num_overlap (edit the config to change them); "
            "--shifts, --overlap, --segment and --no-split are for Demucs models",
            demucs_opt, cfg.name);
        goto cleanup;
    }
    double tl = cli_now();
    dmx_status st = model_config ? dmx_model_load_config(model_config, checkpoint, &model)
                                 : dmx_model_load(model_path, &model);
    if (st != DMX_OK) {
        const char *d = dmx_last_error();
        /* A damaged download is the likely cause when it came from the cache. */
        cli_err("cannot load model %s from %s: %s%s", cfg.name, model_path,
                *d ? d : dmx_status_str(st),
                cfg.repo || model_config ? "" : " (check the cache with 'demix models verify')");
        exit_rc = EXIT_RUNTIME;
        goto cleanup;
    }
    int32_t S = dmx_model_n_sources(model);
    {
        char srcs[512] = "";
        for (int s = 0; s < S; s++) {
            size_t l = strlen(srcs);
            snprintf(srcs + l, sizeof srcs - l, "%s%s", s ? ", " : "",
                     dmx_model_source_name(model, s));
        }
        cli_debug(
            "model %s (%s): %d sources (%s), %d Hz, %d channels, segment %.2f s, %d member%s, "
            "%.1f M parameters, loaded in %.2f s",
            cfg.name, model_path, S, srcs, dmx_model_samplerate(model), dmx_model_channels(model),
            dmx_model_segment(model), dmx_model_n_members(model),
            dmx_model_n_members(model) == 1 ? "" : "s", dmx_model_n_params(model) / 1e6,
            cli_now() - tl);
        if (cfg.two_stems && dmx_model_source_index(model, cfg.two_stems) < 0) {
            exit_rc = cli_usage_error(cmd,
                                      "--two-stems %s: the model %s has no such source; STEM must "
                                      "be one of %s",
                                      cfg.two_stems, cfg.name, srcs);
            goto cleanup;
        }
    }
    if (seg_given && cfg.segment > dmx_model_max_segment(model) + 1e-9) {
        exit_rc = cli_usage_error(cmd,
                                  "--segment %g is longer than the %.2f s the model %s was trained "
                                  "on; use at most that",
                                  cfg.segment, dmx_model_max_segment(model), cfg.name);
        goto cleanup;
    }

    /* Output stems and their file names. */
    char *owned_names[2] = {NULL, NULL};
    if (!cfg.two_stems) {
        n_stems = S;
        stems = xcalloc((size_t)S, sizeof *stems);
        for (int s = 0; s < S; s++) stems[s] = dmx_model_source_name(model, s);
    } else {
        n_stems = cfg.other_method == OM_NONE ? 1 : 2;
        stems = xcalloc(2, sizeof *stems);
        stems[0] = cfg.two_stems;
        if (n_stems == 2) {
            /* Upstream's names: no_STEM for the sum of the others, minus_STEM
             * for the mix minus STEM. */
            owned_names[1] =
                xasprintf("%s_%s", cfg.other_method == OM_MINUS ? "minus" : "no", cfg.two_stems);
            stems[1] = owned_names[1];
        }
    }
    base_dir = path_join(cfg.out, cfg.name);
    for (size_t i = 0; i < n_tracks; i++) {
        track *t = &tracks[i];
        t->outs = xcalloc((size_t)n_stems, sizeof *t->outs);
        for (int s = 0; s < n_stems; s++) {
            char *rel = expand_template(cfg.filename, t->track, t->trackext, stems[s], ext, err,
                                        sizeof err);
            t->outs[s] = path_join(base_dir, rel);
            free(rel);
        }
    }
    /* Two outputs with one name would overwrite each other (or, with -j, race
     * on one .part file): refuse before separating anything. */
    {
        size_t total = n_tracks * (size_t)n_stems;
        char **all = xcalloc(total, sizeof *all);
        for (size_t i = 0, k = 0; i < n_tracks; i++)
            for (int s = 0; s < n_stems; s++) all[k++] = tracks[i].outs[s];
        qsort(all, total, sizeof *all, cmp_str);
        for (size_t k = 1; k < total; k++)
            if (!strcmp(all[k], all[k - 1])) {
                exit_rc = cli_usage_error(cmd,
                                          "two outputs would be written to %s; put {track} and "
                                          "{stem} (and {trackext} for tracks that differ only in "
                                          "extension) in --filename",
                                          all[k]);
                free(all);
                free(owned_names[1]);
                owned_names[1] = NULL;
                goto cleanup_names;
            }
        free(all);
    }

    abs_base = abs_path(base_dir);
    cli_info("Separated tracks will be stored in %s", abs_base);
    if (dmx_model_n_members(model) > 1)
        cli_info("Selected model is a bag of %d models; progress counts every model's segments.",
                 dmx_model_n_members(model));

    run r = {0};
    r.cfg = &cfg;
    r.model = model;
    r.tracks = tracks;
    r.n_tracks = n_tracks;
    r.stems = stems;
    r.n_stems = n_stems;
    int jobs = cfg.jobs < (int)n_tracks ? cfg.jobs : (int)n_tracks;
    /* --threads (default: every core, or DEMIX_THREADS) is shared by the
     * jobs (demix.h's one rule: -j x threads per job never exceeds the
     * CPUs); within a job the engine runs that many segments side by side. */
    int want = cfg.threads;
    const char *env = getenv("DEMIX_THREADS");
    if (want <= 0 && env && atoi(env) > 0) want = atoi(env);
    int cpus = dmx_cpu_count();
    dmx_thread_plan tp = dmx_threads_divide(cpus, jobs, want);
    if (tp.jobs < jobs)
        cli_warn("-j %d: only %d track%s at once (one per compute thread, %d CPUs)", jobs, tp.jobs,
                 tp.jobs == 1 ? "" : "s", cpus);
    jobs = tp.jobs;
    r.n_threads = tp.threads_per_job;
    cli_debug("%d job%s x %d thread%s (%d CPUs)", jobs, jobs == 1 ? "" : "s", r.n_threads,
              r.n_threads == 1 ? "" : "s", cpus);

    progress_init(jobs);
    double t0 = cli_now();
    if (jobs == 1) {
        worker_arg w = {&r, 0};
        worker(&w);
    } else {
        pthread_t *th = xcalloc((size_t)jobs, sizeof *th);
        worker_arg *wa = xcalloc((size_t)jobs, sizeof *wa);
        int started = 0;
        for (int j = 0; j < jobs; j++) {
            wa[j].r = &r;
            wa[j].slot = j;
            if (pthread_create(&th[j], NULL, worker, &wa[j]) != 0) break;
            started++;
        }
        if (!started) worker(&wa[0]); /* no threads to be had: do it here */
        for (int j = 0; j < started; j++) pthread_join(th[j], NULL);
        free(th);
        free(wa);
    }
    progress_shutdown();

    int n_ok = atomic_load(&r.n_ok);
    int n_failed = (int)n_tracks - n_ok;
    char el[32];
    cli_format_duration(cli_now() - t0, el, sizeof el);
    if (atomic_load(&cli_cancel)) {
        exit_rc = EXIT_INTERRUPT;
        int sig = atomic_load(&cli_cancel);
        cli_err("interrupted by %s; %d of %zu tracks were separated",
                sig == SIGTERM  ? "SIGTERM"
                : sig == SIGHUP ? "SIGHUP"
                                : "Ctrl-C",
                n_ok, n_tracks);
    } else if (n_failed || n_missing) {
        exit_rc = EXIT_RUNTIME;
        /* With one track its own error already says everything. */
        if (n_tracks + (size_t)n_missing > 1)
            cli_err("%d of %zu track%s failed; %d separated into %s", n_failed + n_missing,
                    n_tracks + (size_t)n_missing, n_tracks + n_missing == 1 ? "" : "s", n_ok,
                    abs_base);
    } else {
        cli_info("Done: %d track%s separated with %s in %s; stems are in %s", n_ok,
                 n_ok == 1 ? "" : "s", cfg.name, el, abs_base);
    }
    free(owned_names[1]);

cleanup_names:
cleanup:
    for (size_t i = 0; i < n_tracks; i++) {
        track *t = &tracks[i];
        if (t->outs)
            for (int s = 0; s < n_stems; s++) free(t->outs[s]);
        free(t->outs);
        free(t->path);
        free(t->track);
        free(t->trackext);
    }
    free(tracks);
    free(stems);
    free(base_dir);
    free(abs_base);
    free(model_path);
    free(config_name);
    dmx_model_free(model);
    return exit_rc;
}
