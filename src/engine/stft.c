/*
 * stft.c - see stft.h. Follows torch.stft / torch.istft semantics:
 * normalized=True scales the forward transform by 1/sqrt(nfft) and the inverse
 * by sqrt(nfft); istft divides the overlap-added signal by the summed squared
 * window (NOLA).
 */
#include "stft.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct dmx__stft {
    int nfft, hop;
    float *window;  /* (nfft) periodic Hann */
    fftwf_plan fwd; /* r2c, nfft */
    fftwf_plan inv; /* c2r, nfft */
};

/* FFTW's planner is not thread-safe; plan creation is serialised. */
static pthread_mutex_t g_plan_lock = PTHREAD_MUTEX_INITIALIZER;

dmx__stft *dmx__stft_new(int nfft) {
    dmx__stft *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->nfft = nfft;
    s->hop = nfft / 4;
    s->window = malloc(sizeof(float) * nfft);
    float *rbuf = fftwf_malloc(sizeof(float) * nfft);
    fftwf_complex *cbuf = fftwf_malloc(sizeof(fftwf_complex) * (nfft / 2 + 1));
    if (!s->window || !rbuf || !cbuf) goto fail;
    for (int n = 0; n < nfft; n++) s->window[n] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * n / nfft));
    pthread_mutex_lock(&g_plan_lock);
    s->fwd = fftwf_plan_dft_r2c_1d(nfft, rbuf, cbuf, FFTW_ESTIMATE);
    s->inv = fftwf_plan_dft_c2r_1d(nfft, cbuf, rbuf, FFTW_ESTIMATE);
    pthread_mutex_unlock(&g_plan_lock);
    fftwf_free(rbuf);
    fftwf_free(cbuf);
    if (!s->fwd || !s->inv) {
        dmx__stft_free(s);
        return NULL;
    }
    return s;
fail:
    fftwf_free(rbuf);
    fftwf_free(cbuf);
    free(s->window);
    free(s);
    return NULL;
}

void dmx__stft_free(dmx__stft *s) {
    if (!s) return;
    pthread_mutex_lock(&g_plan_lock);
    if (s->fwd) fftwf_destroy_plan(s->fwd);
    if (s->inv) fftwf_destroy_plan(s->inv);
    pthread_mutex_unlock(&g_plan_lock);
    free(s->window);
    free(s);
}

int dmx__spec_frames(const dmx__stft *s, int len) { return (len + s->hop - 1) / s->hop; }

long dmx__reflect(long i, long n) {
    if (n == 1) return 0;
    long period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

int dmx__spec(const dmx__stft *s, dmx__arena *ar, const float *x, int channels, int len, float *z) {
    return dmx__spec_ex(s, ar, x, channels, len, 0, z);
}

int dmx__spec_ex(const dmx__stft *s, dmx__arena *ar, const float *x, int channels, int len,
                 int zero_pad, float *z) {
    const int nfft = s->nfft, hop = s->hop, nb = nfft / 2;
    const int le = dmx__spec_frames(s, len);
    /* _spec pads (hop/2*3, hop/2*3 + le*hop - len) with reflection (pad1d
     * falls back to zero-extending first when the signal is too short), then
     * stft(center=True) reflects nfft/2 more on each side. */
    const long pad = hop / 2 * 3;
    const long padr = pad + (long)le * hop - len;
    const long l1 = len + pad + padr; /* after _spec's padding */
    const long c = nfft / 2;
    const long l2 = l1 + 2 * c; /* after stft's centering */
    dmx__arena_mark m = dmx__arena_save(ar);
    float *p1 = dmx__arena_floats(ar, (size_t)l1);
    float *p2 = dmx__arena_floats(ar, (size_t)l2);
    float *fr = fftwf_alloc_real(nfft);
    fftwf_complex *out = fftwf_alloc_complex(nb + 1);
    if (!p1 || !p2 || !fr || !out) {
        fftwf_free(fr);
        fftwf_free(out);
        dmx__arena_restore(ar, m);
        return -1;
    }
    const float norm = (float)(1.0 / sqrt((double)nfft));
    for (int ch = 0; ch < channels; ch++) {
        const float *xc = x + (size_t)ch * len;
        /* pad1d(reflect) with its extra-zero fallback for short inputs */
        long padl_eff = pad, padr_eff = padr, extra_l = 0, extra_r = 0;
        long maxpad = pad > padr ? pad : padr;
        if (len <= maxpad) {
            long extra = maxpad - len + 1;
            extra_r = padr < extra ? padr : extra;
            extra_l = extra - extra_r;
            padl_eff = pad - extra_l;
            padr_eff = padr - extra_r;
        }
        long core = len + extra_l + extra_r; /* zero-extended signal */
        for (long i = 0; i < l1; i++) {
            long k = zero_pad ? i - pad : dmx__reflect(i - padl_eff, core) - extra_l;
            p1[i] = (k >= 0 && k < len) ? xc[k] : 0.0f;
        }
        (void)padr_eff;
        for (long i = 0; i < l2; i++) p2[i] = p1[dmx__reflect(i - c, l1)];
        float *zr = z + (size_t)ch * 2 * nb * le;
        float *zi = zr + (size_t)nb * le;
        for (int t = 0; t < le; t++) {
            /* frames 2 .. 2+le of the centred STFT */
            const float *src = p2 + (long)(t + 2) * hop;
            for (int n = 0; n < nfft; n++) fr[n] = src[n] * s->window[n];
            fftwf_execute_dft_r2c(s->fwd, fr, out);
            for (int f = 0; f < nb; f++) {
                zr[(size_t)f * le + t] = out[f][0] * norm;
                zi[(size_t)f * le + t] = out[f][1] * norm;
            }
        }
    }
    fftwf_free(fr);
    fftwf_free(out);
    dmx__arena_restore(ar, m);
    return 0;
}

int dmx__ispec(const dmx__stft *s, dmx__arena *ar, const float *z, int channels, int frames,
               int len, float *x) {
    return dmx__ispec_ex(s, ar, z, channels, frames, len, 0, x);
}

int dmx__ispec_ex(const dmx__stft *s, dmx__arena *ar, const float *z, int channels, int frames,
                  int len, int old, float *x) {
    const int nfft = s->nfft, hop = s->hop, nb = nfft / 2;
    /* _ispec: add a zero Nyquist bin and 2 zero frames on each side, istft
     * with length le, keep [pad, pad + len). */
    const int nfr = frames + 4;
    /* hybrid_old: istft to hop·ceil(len/hop) samples and keep [0, len) */
    const long pad = old ? 0 : hop / 2 * 3;
    const long le = (long)hop * ((len + hop - 1) / hop) + 2 * pad;
    const long ola_len = (long)nfft + (long)hop * (nfr - 1);
    dmx__arena_mark m = dmx__arena_save(ar);
    float *ola = dmx__arena_floats(ar, (size_t)ola_len);
    float *env = dmx__arena_floats(ar, (size_t)ola_len);
    float *fr = fftwf_alloc_real(nfft);
    fftwf_complex *in = fftwf_alloc_complex(nb + 1);
    if (!ola || !env || !fr || !in) {
        fftwf_free(fr);
        fftwf_free(in);
        dmx__arena_restore(ar, m);
        return -1;
    }
    memset(env, 0, sizeof(float) * ola_len);
    for (int t = 0; t < nfr; t++)
        for (int n = 0; n < nfft; n++) env[(long)t * hop + n] += s->window[n] * s->window[n];
    /* irfft is unnormalised in FFTW; torch's is 1/nfft, times sqrt(nfft) for
     * normalized=True: overall 1/sqrt(nfft). */
    const float scale = (float)(1.0 / sqrt((double)nfft));
    for (int ch = 0; ch < channels; ch++) {
        const float *zr = z + (size_t)ch * 2 * nb * frames;
        const float *zi = zr + (size_t)nb * frames;
        memset(ola, 0, sizeof(float) * ola_len);
        for (int t = 2; t < frames + 2; t++) { /* the padded frames are zero */
            int tt = t - 2;
            for (int f = 0; f < nb; f++) {
                in[f][0] = zr[(size_t)f * frames + tt];
                in[f][1] = zi[(size_t)f * frames + tt];
            }
            in[nb][0] = 0.0f;
            in[nb][1] = 0.0f;
            fftwf_execute_dft_c2r(s->inv, in, fr);
            float *dst = ola + (long)t * hop;
            for (int n = 0; n < nfft; n++) dst[n] += fr[n] * scale * s->window[n];
        }
        /* centre=True drops nfft/2 samples; then _ispec keeps [pad, pad+len) */
        const long start = nfft / 2 + pad;
        float *xc = x + (size_t)ch * len;
        for (long i = 0; i < len; i++) {
            long k = start + i;
            float e = env[k];
            xc[i] = (k - nfft / 2 < le && e > 1e-11f) ? ola[k] / e : 0.0f;
        }
    }
    fftwf_free(fr);
    fftwf_free(in);
    dmx__arena_restore(ar, m);
    return 0;
}
