/*
 * roformer_bands.c - which spectrogram bins each RoFormer band reads (see
 * roformer.h). The mel filter support follows librosa.filters.mel (Slaney
 * mel scale, "slaney" area norm, float64 arithmetic) so the band edges are
 * those MSST's MelBandRoformer derives; only the sign of each weight
 * matters, the norm is positive.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "roformer.h"

/* librosa.hz_to_mel / mel_to_hz, htk=False */
static const double F_SP = 200.0 / 3, MIN_LOG_HZ = 1000.0;
static double hz_to_mel(double f) {
    const double min_log_mel = MIN_LOG_HZ / F_SP, logstep = log(6.4) / 27.0;
    return f >= MIN_LOG_HZ ? min_log_mel + log(f / MIN_LOG_HZ) / logstep : f / F_SP;
}
static double mel_to_hz(double m) {
    const double min_log_mel = MIN_LOG_HZ / F_SP, logstep = log(6.4) / 27.0;
    return m >= min_log_mel ? MIN_LOG_HZ * exp(logstep * (m - min_log_mel)) : F_SP * m;
}

unsigned char *dmx__rf_mel_support(int sr, int n_fft, int n_mels) {
    int F = n_fft / 2 + 1, M = n_mels + 2;
    double *mel_f = malloc(sizeof(double) * M);
    unsigned char *w = calloc((size_t)n_mels * F, 1);
    if (!mel_f || !w) {
        free(mel_f);
        free(w);
        return NULL;
    }
    /* mel_frequencies: np.linspace(hz_to_mel(0), hz_to_mel(sr/2), M), then mel_to_hz */
    double lo = hz_to_mel(0.0), hi = hz_to_mel(sr / 2.0), step = (hi - lo) / (M - 1);
    for (int i = 0; i < M; i++) mel_f[i] = mel_to_hz(i == M - 1 ? hi : i * step + lo);
    double val = 1.0 / (n_fft * (1.0 / sr)); /* np.fft.rfftfreq(n_fft, 1/sr) */
    for (int i = 0; i < n_mels; i++) {
        double d0 = mel_f[i + 1] - mel_f[i], d1 = mel_f[i + 2] - mel_f[i + 1];
        for (int f = 0; f < F; f++) {
            double ff = f * val;
            double lower = -(mel_f[i] - ff) / d0, upper = (mel_f[i + 2] - ff) / d1;
            double v = lower < upper ? lower : upper;
            w[(size_t)i * F + f] = v > 0.0 && (float)v > 0.0f;
        }
    }
    free(mel_f);
    return w;
}

void dmx__rf_bands_free(dmx__rf_bands *b) {
    if (!b) return;
    free(b->off);
    free(b->bins);
    free(b->per_bin);
    memset(b, 0, sizeof *b);
}

dmx_status dmx__rf_bands_make(const dmx__rf_config *c, dmx__rf_bands *b) {
    memset(b, 0, sizeof *b);
    int F = c->n_fft / 2 + 1, nb = c->n_bands;
    unsigned char *sup = NULL;
    size_t total = 0;
    if (c->kind == DMX__RF_MEL) {
        sup = dmx__rf_mel_support(c->sample_rate, c->n_fft, nb);
        if (!sup) return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
        sup[0] = 1;                            /* mel_filter_bank[0][0] = 1 */
        sup[(size_t)(nb - 1) * F + F - 1] = 1; /* mel_filter_bank[-1][-1] = 1 */
        for (size_t i = 0; i < (size_t)nb * F; i++) total += sup[i];
    } else {
        total = (size_t)F;
    }
    b->n_bands = nb;
    b->off = malloc(sizeof(int) * (nb + 1));
    b->bins = malloc(sizeof(int) * (total ? total : 1));
    b->per_bin = calloc((size_t)F, sizeof(int));
    if (!b->off || !b->bins || !b->per_bin) {
        free(sup);
        dmx__rf_bands_free(b);
        return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
    }
    int k = 0;
    b->off[0] = 0;
    for (int band = 0, f0 = 0; band < nb; band++) {
        if (sup) {
            for (int f = 0; f < F; f++)
                if (sup[(size_t)band * F + f]) b->bins[k++] = f;
        } else {
            for (int j = 0; j < c->freqs_per_bands[band]; j++) b->bins[k++] = f0 + j;
            f0 += c->freqs_per_bands[band];
        }
        b->off[band + 1] = k;
    }
    free(sup);
    for (int i = 0; i < k; i++) b->per_bin[b->bins[i]]++;
    for (int f = 0; f < F; f++)
        if (b->per_bin[f] == 0) {
            dmx__rf_bands_free(b);
            return dmx__fail(DMX_ERR_MODEL,
                             "roformer: frequency bin %d is in no band (the reference requires "
                             "every bin covered)",
                             f);
        }
    for (int band = 0; band < nb; band++)
        if (b->off[band + 1] == b->off[band]) {
            dmx__rf_bands_free(b);
            return dmx__fail(DMX_ERR_MODEL, "roformer: band %d holds no frequency bin", band);
        }
    return DMX_OK;
}
