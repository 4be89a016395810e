/*
 * check.c - numeric checks for the CLI tests (the scripts beside it), which can only
 * see the files `demix` writes. Decodes them with the audio module and
 * compares against .npy references or against each other.
 *
 *   demix_cli_check info FILE
 *       prints "RATE CHANNELS FRAMES CODEC" of FILE as decoded.
 *   demix_cli_check gain IN OUT FACTOR
 *       writes IN times FACTOR to OUT as float32 WAV (a loud test input).
 *   demix_cli_check golden REF.npy TOL STEM_FILE...
 *       REF is (sources, channels, samples); the files are the stems in
 *       source order. Passes when max|ours - ref| <= TOL * max|ref| over all
 *       stems; prints the ratio per stem and overall.
 *   demix_cli_check golden_sub REF.npy TOL STRIDE STEM_FILE...
 *       the same against a reference holding every STRIDE-th sample.
 *   demix_cli_check combo TOL OUT +A -B ...
 *       OUT == sum of the signed terms within TOL * max|OUT|.
 *   demix_cli_check peak FILE
 *       prints the largest |sample| of FILE.
 * Exit status 0 = pass, 1 = fail, 2 = bad use or unreadable input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demix/audio.h"
#include "testutil.h"

typedef struct {
    float **ch;
    int64_t n;
    int32_t rate, channels;
} audio;

static int load(const char *path, audio *a) {
    dmx_status st = dmx_audio_load_ex(path, 0, 0, &a->ch, &a->n, &a->rate, &a->channels);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot decode %s: %s\n", path, dmx_last_error());
        return -1;
    }
    return 0;
}

static void unload(audio *a) { dmx_audio_free(a->ch, a->channels); }

static int cmd_info(const char *path) {
    audio a;
    if (load(path, &a)) return 2;
    dmx_decoder *d = NULL;
    if (dmx_decoder_open(path, 0, 0, &d) != DMX_OK) return 2;
    printf("%d %d %lld %s\n", a.rate, a.channels, (long long)a.n, dmx_decoder_codec_name(d));
    dmx_decoder_close(d);
    unload(&a);
    return 0;
}

static int cmd_gain(const char *in, const char *out, double g) {
    audio a;
    if (load(in, &a)) return 2;
    for (int c = 0; c < a.channels; c++)
        for (int64_t i = 0; i < a.n; i++) a.ch[c][i] = (float)(a.ch[c][i] * g);
    dmx_audio_format f;
    dmx_audio_format_init(&f, DMX_AUDIO_WAV);
    f.depth = DMX_DEPTH_F32;
    dmx_encoder *e = NULL;
    dmx_status st = dmx_encoder_open(out, &f, a.rate, a.channels, &e);
    if (st == DMX_OK) st = dmx_encoder_write(e, (const float *const *)a.ch, a.n);
    if (st == DMX_OK) st = dmx_encoder_close(e);
    else dmx_encoder_abort(e);
    unload(&a);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot write %s: %s\n", out, dmx_last_error());
        return 2;
    }
    return 0;
}

static int cmd_peak(const char *path) {
    audio a;
    if (load(path, &a)) return 2;
    double peak = 0;
    for (int c = 0; c < a.channels; c++)
        for (int64_t i = 0; i < a.n; i++) peak = fmax(peak, fabs(a.ch[c][i]));
    printf("%.9g\n", peak);
    unload(&a);
    return 0;
}

static int cmd_golden(const char *ref_path, double tol, int64_t stride, int n_files, char **files) {
    npy_array ref;
    if (npy_load(ref_path, &ref) != 0) {
        fprintf(stderr, "cannot load %s\n", ref_path);
        return 2;
    }
    if (ref.ndim != 3 || ref.shape[0] != n_files) {
        fprintf(stderr, "%s: expected (%d, channels, samples), got ndim %d\n", ref_path, n_files,
                ref.ndim);
        npy_free(&ref);
        return 2;
    }
    int64_t C = ref.shape[1], T = ref.shape[2];
    double worst_diff = 0, worst_ref = 0;
    int rc = 0;
    for (int s = 0; s < n_files; s++) {
        audio a;
        if (load(files[s], &a)) {
            rc = 2;
            continue;
        }
        if (a.channels != C || (a.n + stride - 1) / stride != T) {
            fprintf(stderr, "%s: %d channels x %lld samples, reference has %lld x %lld (every %lld-th)\n",
                    files[s], a.channels, (long long)a.n, (long long)C, (long long)T, (long long)stride);
            rc = 1;
            unload(&a);
            continue;
        }
        double md = 0, mr = 0;
        for (int64_t c = 0; c < C; c++) {
            double d, r;
            float *ours = a.ch[c], *sub = NULL;
            if (stride > 1) { /* every stride-th sample, as the reference holds */
                sub = malloc(sizeof(float) * (size_t)T);
                for (int64_t t = 0; t < T; t++) sub[t] = a.ch[c][t * stride];
                ours = sub;
            }
            rel_max_err(ours, ref.data + (s * C + c) * T, (size_t)T, &d, &r);
            free(sub);
            md = fmax(md, d);
            mr = fmax(mr, r);
        }
        printf("%s: max|ours-ref| = %.3g, max|ref| = %.3g, ratio %.3g\n", files[s], md, mr,
               mr > 0 ? md / mr : md);
        worst_diff = fmax(worst_diff, md);
        worst_ref = fmax(worst_ref, mr);
        unload(&a);
    }
    double ratio = worst_ref > 0 ? worst_diff / worst_ref : worst_diff;
    printf("overall ratio max|ours-ref| / max|ref| = %.3g (tolerance %.3g)\n", ratio, tol);
    npy_free(&ref);
    if (rc) return rc;
    return ratio <= tol ? 0 : 1;
}

static int cmd_combo(double tol, const char *out_path, int n_terms, char **terms) {
    audio out;
    if (load(out_path, &out)) return 2;
    double *acc = calloc((size_t)(out.channels * out.n), sizeof *acc);
    int rc = 0;
    for (int k = 0; k < n_terms && !rc; k++) {
        double sign = terms[k][0] == '-' ? -1 : 1;
        const char *p = (terms[k][0] == '-' || terms[k][0] == '+') ? terms[k] + 1 : terms[k];
        audio a;
        if (load(p, &a)) {
            rc = 2;
            break;
        }
        if (a.channels != out.channels || a.n != out.n) {
            fprintf(stderr, "%s and %s differ in shape\n", p, out_path);
            rc = 1;
        } else {
            for (int c = 0; c < a.channels; c++)
                for (int64_t i = 0; i < a.n; i++) acc[c * out.n + i] += sign * a.ch[c][i];
        }
        unload(&a);
    }
    if (!rc) {
        double md = 0, mr = 0;
        for (int c = 0; c < out.channels; c++)
            for (int64_t i = 0; i < out.n; i++) {
                md = fmax(md, fabs(out.ch[c][i] - acc[c * out.n + i]));
                mr = fmax(mr, fabs(out.ch[c][i]));
            }
        double ratio = mr > 0 ? md / mr : md;
        printf("%s: max|out - combination| = %.3g, max|out| = %.3g, ratio %.3g (tolerance %.3g)\n",
               out_path, md, mr, ratio, tol);
        rc = ratio <= tol ? 0 : 1;
    }
    free(acc);
    unload(&out);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "info")) return cmd_info(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "peak")) return cmd_peak(argv[2]);
    if (argc >= 5 && !strcmp(argv[1], "gain")) return cmd_gain(argv[2], argv[3], atof(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "golden"))
        return cmd_golden(argv[2], atof(argv[3]), 1, argc - 4, argv + 4);
    if (argc >= 6 && !strcmp(argv[1], "golden_sub") && atoll(argv[4]) >= 1)
        return cmd_golden(argv[2], atof(argv[3]), atoll(argv[4]), argc - 5, argv + 5);
    if (argc >= 5 && !strcmp(argv[1], "combo"))
        return cmd_combo(atof(argv[2]), argv[3], argc - 4, argv + 4);
    fprintf(stderr, "usage: demix_cli_check info|peak FILE | gain IN OUT FACTOR | golden REF TOL FILES... | golden_sub REF TOL STRIDE FILES... | "
                    "combo TOL OUT +A -B...\n");
    return 2;
}
