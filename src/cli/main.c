/*
 * main.c - the `demix` executable: subcommand dispatch, signal handling and
 * the help texts. The work is in separate.c and models.c; keeping the texts
 * here puts the whole user-facing contract of the tool in one place.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demix/audio.h"

#ifdef DEMIX_HAVE_SERVER
int srv_serve_main(int argc, char **argv); /* src/server/serve.c */
#endif

#ifdef DEMIX_HAVE_SERVER
/* `demix serve` lives in src/server (library demix_server), which defines
 * DEMIX_HAVE_SERVER for this target when it is built. */
int srv_serve_main(int argc, char **argv);
int srv_worker_main(int argc, char **argv);
#define SERVE_USAGE   "    demix serve [OPTIONS]\n    demix worker --store postgresql://... [OPTIONS]\n"
#define SERVE_COMMAND                                                        \
    "    serve      Run the HTTP API. See 'demix serve --help'.\n"           \
    "    worker     Run jobs from a shared PostgreSQL queue (clustered mode).\n"
#else
#define SERVE_USAGE   ""
#define SERVE_COMMAND ""
#endif

int cli_verbosity = 0;
atomic_int cli_cancel;

/* SIGINT (Ctrl-C), SIGTERM (kill, systemd, docker stop) and SIGHUP (the
 * terminal closed, the ssh session dropped) take one path: the first one
 * asks the running separation or download to stop so that it removes its
 * partial files, and the command then exits with 128 + that signal's
 * number. A second Ctrl-C stops at once; repeats of SIGTERM or SIGHUP
 * (a hangup often comes twice, from the kernel and from the shell) do
 * not cut the cleanup short. */
static void on_signal(int sig) {
    int none = 0;
    if (!atomic_compare_exchange_strong(&cli_cancel, &none, sig) && sig == SIGINT) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

void cli_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int cli_interrupt_exit(void) {
    int sig = atomic_load(&cli_cancel);
    return sig > 0 && sig < 64 ? 128 + sig : EXIT_INTERRUPT;
}

/* What a command returns as EXIT_INTERRUPT becomes 128 + the signal. */
static int exit_status(int rc) { return rc == EXIT_INTERRUPT ? cli_interrupt_exit() : rc; }

static const char ENV_AND_EXIT[] =
    "ENVIRONMENT\n"
    "    DEMIX_MODELS\n"
    "        Folder of the model cache. Default: $XDG_CACHE_HOME/demix, or\n"
    "        ~/.cache/demix when XDG_CACHE_HOME is unset.\n"
    "    DEMIX_MODEL_URL\n"
    "        Root of upstream's model folders (hybrid_transformer/, mdx_final/)\n"
    "        that downloads come from. Default:\n"
    "        https://dl.fbaipublicfiles.com/demucs/\n"
    "    DEMIX_CONNECT_TIMEOUT, DEMIX_STALL_TIMEOUT\n"
    "        Seconds before a download gives up connecting (default 20) or\n"
    "        receiving under 1 KiB/s (default 30).\n"
    "    http_proxy, https_proxy, no_proxy\n"
    "        Proxies for downloads, as for curl.\n"
    "    OPENBLAS_CORETYPE\n"
    "        OpenBLAS's kernel family (demix --version shows the one in use).\n"
    "        On a build with AVX2 or AVX-512, demix computes its matrix\n"
    "        products with its own kernels unless DEMIX_GEMM=openblas.\n"
    "    DEMIX_GEMM\n"
    "        'openblas' or 'own' forces who computes the matrix products\n"
    "        (benchmarks; results agree within rounding).\n"
    "\n"
    "EXIT STATUS\n"
    "    0    Everything asked for was done.\n"
    "    1    A track, a model or a download failed (the reason is printed;\n"
    "         other tracks are still processed).\n"
    "    2    The command line is wrong or contradictory; nothing was done.\n"
    "    130  Interrupted by Ctrl-C (SIGINT); partial output files were removed.\n"
    "    129, 143\n"
    "         Stopped by SIGHUP (terminal closed) or SIGTERM, the same way.\n";

void print_main_help(FILE *f) {
    fprintf(f,
            "NAME\n"
            "    demix - split music into stems with Demucs v4 models, on the CPU\n"
            "\n"
            "USAGE\n"
            "    demix separate [OPTIONS] TRACK...\n"
            "    demix models {list | fetch NAME... | verify [NAME...] | path NAME}\n" SERVE_USAGE
            "    demix --help | --version\n"
            "\n"
            "DESCRIPTION\n"
            "    demix is a C port of Demucs v4 (Hybrid Transformer Demucs). It reads\n"
            "    any audio file FFmpeg can decode and writes one file per source\n"
            "    (drums, bass, other, vocals, and guitar and piano for htdemucs_6s).\n"
            "    Its options and output layout follow upstream's `demucs` command.\n"
            "\n"
            "COMMANDS\n"
            "    separate   Separate tracks into stems. See 'demix separate --help'.\n"
            "    models     List, download, verify and locate models.\n"
            "               See 'demix models --help'.\n" SERVE_COMMAND "\n"
            "OPTIONS\n"
            "    -h, --help     Show this text.\n"
            "    --version      Show the version.\n"
            "\n"
            "EXAMPLES\n"
            "    demix separate song.mp3\n"
            "    demix separate -n htdemucs_6s --mp3 -o stems album/\n"
            "    demix models fetch htdemucs_ft\n"
            "\n"
            "%s",
            ENV_AND_EXIT);
}

void print_separate_help(FILE *f) {
    fprintf(f,
            "NAME\n"
            "    demix separate - split tracks into stems\n"
            "\n"
            "USAGE\n"
            "    demix separate [OPTIONS] TRACK...\n"
            "\n"
            "DESCRIPTION\n"
            "    Each TRACK (any file FFmpeg decodes; a folder means every audio file\n"
            "    in it, sorted, not recursive) is decoded at the model's sample rate,\n"
            "    normalised as a whole, separated and written as one file per stem to\n"
            "    OUT/NAME/{track}/{stem}.{ext}. A track that fails leaves no output\n"
            "    files; the other tracks are still separated. Existing files are\n"
            "    replaced. The model is downloaded into the cache on first use (see\n"
            "    'demix models --help').\n"
            "\n"
            "OPTIONS\n"
            "  Model\n"
            "    -n, --name NAME        Model: htdemucs (default), any name upstream's\n"
            "                           demucs -n accepts ('demix models list'), a\n"
            "                           signature, or one in --repo or the cache.\n"
            "    -s, --sig SIG          One single model by its signature (never a\n"
            "                           bag); excludes -n.\n"
            "    --repo DIR             Use DIR's models instead of the cache: NAME\n"
            "                           is DIR/NAME.th, DIR/NAME-HASH.th (checked\n"
            "                           against HASH) or the bag DIR/NAME.yaml (or an\n"
            "                           MSST config DIR/NAME.yaml + DIR/NAME.ckpt).\n"
            "    --model-config YAML    A BS-/Mel-Band RoFormer: its MSST config, with\n"
            "    --checkpoint CKPT      its checkpoint; excludes -n, -s and --repo.\n"
            "                           Stems are the config's instruments; files go\n"
            "                           to DIR/<config name>/.\n"
            "    --list-models          List the bags and single models (of --repo\n"
            "                           DIR if given) as upstream's demucs does.\n"
            "\n"
            "  Output\n"
            "    -o, --out DIR          Output folder (default: separated); files go\n"
            "                           to DIR/NAME/.\n"
            "    --filename TEMPLATE    Output path under DIR/NAME. Fields: {track}\n"
            "                           (file name without extension), {trackext},\n"
            "                           {stem}, {ext}; '{{' and '}}' are braces.\n"
            "                           Default: {track}/{stem}.{ext}\n"
            "    --two-stems STEM       Write only STEM and its complement.\n"
            "    --other-method METHOD  The complement for --two-stems:\n"
            "                           add    no_STEM = sum of the other stems\n"
            "                                  (default)\n"
            "                           minus  minus_STEM = mix - STEM\n"
            "                           none   no complement\n"
            "\n"
            "  Output format (default: 16-bit WAV)\n"
            "    --int24                24-bit WAV or FLAC.\n"
            "    --float32              32-bit float WAV.\n"
            "    --flac                 FLAC (16-bit, or 24-bit with --int24).\n"
            "    --mp3                  MP3 (constant bitrate).\n"
            "    --mp3-bitrate KBPS     MP3 bitrate, 32..320 (default 320).\n"
            "    --mp3-preset N         MP3 encoder quality, 2 (best, default) to 7\n"
            "                           (fastest).\n"
            "    --clip-mode MODE       Keep each stem within full scale:\n"
            "                           rescale  divide by 1.01 x its peak when that\n"
            "                                    exceeds 1 (default)\n"
            "                           clamp    clip samples to +-0.99\n"
            "                           none     leave as is (integer formats clip)\n"
            "\n"
            "  Separation\n"
            "    --shifts N             Average N randomly time-shifted passes (0..100,\n"
            "                           default 1; 0 = a single unshifted pass). Costs\n"
            "                           N times the time; 10 was used in the paper.\n"
            "    --seed N               Seed of the shifts (default 0), so that\n"
            "                           results are reproducible.\n"
            "    --overlap F            Overlap between segments, 0 <= F < 1\n"
            "                           (default 0.25).\n"
            "    --segment SECONDS      Segment length; at most the model's own\n"
            "                           (7.8 s for the htdemucs family).\n"
            "    --no-split             Process each track in one piece.\n"
            "                           --shifts, --overlap, --segment and --no-split\n"
            "                           are for Demucs models: a RoFormer runs MSST's\n"
            "                           chunking from its config and refuses them.\n"
            "    -j, --jobs N           Separate N tracks at once (default 1, at most\n"
            "                           one per thread); the threads are shared.\n"
            "    --threads N            Compute threads in all (default: every core,\n"
            "                           or $DEMIX_THREADS); a track evaluates that many\n"
            "                           segments side by side.\n"
            "    -d, --device cpu       Only 'cpu' exists in this build.\n"
            "\n"
            "  General\n"
            "    -v, --verbose          Also print model, decoding and timing details.\n"
            "    -q, --quiet            Print errors only.\n"
            "    -h, --help             Show this text.\n"
            "    --version              Show the version.\n"
            "\n"
            "PROGRESS\n"
            "    On a terminal, stderr shows a bar per running track: segments done,\n"
            "    percentage, elapsed time and estimated time left. Otherwise a plain\n"
            "    line is printed at most every 5 %% or 10 seconds.\n"
            "\n"
            "EXAMPLES\n"
            "    Separate two songs with the default model into ./separated/htdemucs:\n"
            "        demix separate song1.mp3 song2.flac\n"
            "    Karaoke track (vocals and everything else) as MP3:\n"
            "        demix separate --two-stems vocals --mp3 song.mp3\n"
            "    Six stems of a whole album folder, two tracks at a time, as FLAC:\n"
            "        demix separate -n htdemucs_6s -j 2 --flac -o stems album/\n"
            "    Flat file names, with a local model folder:\n"
            "        demix separate --repo ~/models -n mymodel \\\n"
            "            --filename '{track}-{stem}.{ext}' song.wav\n"
            "\n"
            "%s",
            ENV_AND_EXIT);
}

void print_models_help(FILE *f) {
    fprintf(f,
            "NAME\n"
            "    demix models - list, download, verify and locate models\n"
            "\n"
            "USAGE\n"
            "    demix models list [--repo DIR]\n"
            "    demix models fetch NAME...\n"
            "    demix models verify [--repo DIR] [NAME...]\n"
            "    demix models path [--repo DIR] NAME\n"
            "\n"
            "DESCRIPTION\n"
            "    demix downloads upstream Demucs's pretrained checkpoints into a cache\n"
            "    folder (see ENVIRONMENT). It knows every name upstream's demucs -n\n"
            "    accepts (htdemucs, htdemucs_ft, htdemucs_6s, hdemucs_mmi, mdx,\n"
            "    mdx_extra, mdx_q, mdx_extra_q, repro_mdx_a and its _hybrid_only /\n"
            "    _time_only variants); 'models list' shows each one's network\n"
            "    family and sources. Checkpoints are named SIG-HASH.th, where HASH\n"
            "    (lowercase hex) starts the file's sha256; a download enters the\n"
            "    cache only when it matches.\n"
            "\n"
            "ACTIONS\n"
            "    list         Table of the models: sources, size, and whether and\n"
            "                 where each is cached. With --repo, DIR's models.\n"
            "    fetch NAME   Download a model (or one checkpoint named SIG-HASH.th\n"
            "                 from DEMIX_MODEL_URL). An interrupted download resumes\n"
            "                 where it stopped when fetched again; files already in\n"
            "                 the cache are verified and downloaded again if damaged.\n"
            "    verify       Recompute the checksums of the cached checkpoints (or\n"
            "                 of NAME's files only).\n"
            "    path NAME    Print the file 'demix separate -n NAME' loads.\n"
            "\n"
            "OPTIONS\n"
            "    --repo DIR   Look at DIR (upstream's local model folder layout)\n"
            "                 instead of the cache.\n"
            "    -v, --verbose, -q, --quiet, -h, --help\n"
            "\n"
            "OFFLINE USE\n"
            "    Download the files elsewhere, from the URLs that 'demix models\n"
            "    fetch' prints, and copy them into the cache\n"
            "    folder; or keep them in any folder and use 'demix separate --repo'.\n"
            "\n"
            "EXAMPLES\n"
            "    demix models list\n"
            "    demix models fetch htdemucs htdemucs_6s\n"
            "    demix models verify\n"
            "    DEMIX_MODELS=/srv/models demix models path htdemucs_ft\n"
            "\n"
            "%s",
            ENV_AND_EXIT);
}

static void print_version(void) {
    printf("demix %s (engine %s; output formats: %s; OpenBLAS kernels: %s)\n", DEMIX_CLI_VERSION,
           DMX_VERSION_STRING, dmx_audio_supported_formats(), dmx_blas_core());
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: demix separate [OPTIONS] TRACK...\n"
                        "       demix models {list | fetch | verify | path}\n"
                        "Run 'demix --help' for details.\n");
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    /* (`demix serve` takes its stop signals itself: serve.c) */
    if (!strcmp(cmd, "separate") || !strcmp(cmd, "models")) cli_install_signal_handlers();
    if (!strcmp(cmd, "separate")) return exit_status(cmd_separate(argc - 1, argv + 1));
    if (!strcmp(cmd, "models")) return exit_status(cmd_models(argc - 1, argv + 1));
#ifdef DEMIX_HAVE_SERVER
    if (!strcmp(cmd, "serve")) return srv_serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "worker")) return srv_worker_main(argc - 1, argv + 1);
#endif
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        print_main_help(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "help")) {
        if (argc > 2 && !strcmp(argv[2], "separate"))
            print_separate_help(stdout);
        else if (argc > 2 && !strcmp(argv[2], "models"))
            print_models_help(stdout);
        else
            print_main_help(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        print_version();
        return EXIT_OK;
    }
    if (cmd[0] == '-') return cli_usage_error(NULL, "unknown option '%s'", cmd);
    return cli_usage_error(NULL, "unknown command '%s' (did you mean 'demix separate %s'?)", cmd,
                           cmd);
}
