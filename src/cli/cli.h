/*
 * cli.h - what the files of the demix command-line tool share: exit codes,
 * terminal output (which must not garble the progress bar), option-parsing
 * helpers, the model registry/cache, and the subcommand entry points.
 * Nothing here is public API; the CLI is a client of the public headers in include/demix.
 */
#ifndef DEMIX_CLI_H
#define DEMIX_CLI_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "demix/demix.h"

#ifndef DEMIX_CLI_VERSION
#define DEMIX_CLI_VERSION DMX_VERSION_STRING
#endif

/* Exit statuses (documented in --help). */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1,    /* a track, a model or a download failed */
    EXIT_USAGE = 2,      /* bad or contradictory command line */
    EXIT_INTERRUPT = 130 /* commands return it; main.c exits with 128 + the signal */
};

/* ---- global state (main.c) --------------------------------------------------- */

/* Verbosity: -1 quiet, 0 normal, 1 verbose. */
extern int cli_verbosity;
/* The first of SIGINT, SIGTERM or SIGHUP received (0: none); polled by
 * separation (dmx_separate_opts.cancel) and downloads so both stop cleanly
 * and remove their partial files. */
extern atomic_int cli_cancel;
void cli_install_signal_handlers(void);
/* 128 + the signal in cli_cancel (130 if none): the exit status. */
int cli_interrupt_exit(void);

/* ---- terminal output (progress.c) --------------------------------------------- */

/* All output goes through these so that a progress bar drawn on a TTY is
 * cleared first and redrawn after; they are safe to call from any thread. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* "demix: ..." */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* unless quiet */
void cli_info(const char *fmt, ...)
    __attribute__((format(printf, 1, 2))); /* stdout, unless quiet */
void cli_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* only with -v */
/* Prints "demix: MSG (see 'demix CMD --help')" and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Log sink for dmx_log_set(): engine and FFmpeg messages. */
void cli_log_sink(void *user, dmx_log_level level, const char *msg);

/* Progress display: one slot per concurrent job. On a TTY the slots are bars
 * redrawn in place on stderr; otherwise each slot prints a plain line at most
 * every 5 % or 10 s. Disabled entirely in quiet mode. */
typedef enum { PROGRESS_SEGMENTS, PROGRESS_BYTES } progress_unit;
void progress_init(int n_slots);
void progress_start(int slot, const char *label, progress_unit unit);
void progress_update(int slot, int64_t done, int64_t total);
void progress_end(int slot);
void progress_shutdown(void);
/* Seconds on a monotonic clock. */
double cli_now(void);
/* "1:02:03" / "2:03" into buf. */
void cli_format_duration(double seconds, char *buf, size_t n);

/* ---- helpers (args.c) ----------------------------------------------------------- */

/* Strict number parsing for option OPT; on failure print a usage error and
 * return EXIT_USAGE, else 0. */
int parse_long_opt(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int parse_double_opt(const char *cmd, const char *opt, const char *s, double lo, double hi,
                     int hi_inclusive, double *out);
int parse_u64_opt(const char *cmd, const char *opt, const char *s, uint64_t *out);
/* Reports getopt_long's failure `ret` (':' missing value, '?' unknown
 * option; the optstring must start with ':') and returns EXIT_USAGE. */
int report_getopt_error(const char *cmd, int argc, char **argv, int ret);

/* malloc'ed printf; aborts on out of memory (the CLI cannot do anything
 * useful without a few bytes of heap). */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
/* dir + "/" + name, without doubling slashes. */
char *path_join(const char *dir, const char *name);
/* mkdir -p. Appends every directory it created to *created (malloc'ed array
 * of malloc'ed paths, count in *n_created) when created != NULL, so a failed
 * track can remove them again. Returns 0 or -1 with errno set. */
int mkdir_p(const char *dir, char ***created, size_t *n_created);
/* 1 if path exists (any type). */
int path_exists(const char *path);
int is_directory(const char *path);
/* Human-readable byte size ("80.2 MiB"). */
void format_bytes(int64_t n, char *buf, size_t len);

/* ---- models (models.c) ------------------------------------------------------------ */

/* Directory of the model cache (the registry's rule, demix/repo.h:
 * $DEMIX_MODELS, $XDG_CACHE_HOME/demix or ~/.cache/demix); malloc'ed. */
char *models_cache_dir(void);

/* Prints upstream's `--list-models` form ("Bag of models:" then "Single
 * models:", one name per indented line) for `repo`, or for upstream's
 * remote repository (the registry's table) when repo is NULL. */
int models_list_upstream(const char *repo);

/* Finds the file to pass to dmx_model_load() for NAME. With `repo` the folder
 * is searched as upstream's LocalRepo/BagOnlyRepo do; without, the cache is
 * searched and, if `allow_fetch`, a known upstream model that is missing is
 * downloaded first. Returns EXIT_OK with *path malloc'ed, or EXIT_RUNTIME /
 * EXIT_USAGE after printing the reason. */
int models_resolve(const char *name, const char *repo, int allow_fetch, char **path);

/* Subcommands. argv[0] is the subcommand name. */
int cmd_separate(int argc, char **argv);
int cmd_models(int argc, char **argv);

/* Help texts (main.c). */
void print_main_help(FILE *f);
void print_separate_help(FILE *f);
void print_models_help(FILE *f);

#endif
