/*
 * resample.c - julius.resample_frac (see resample.h).
 */
#include "resample.h"

#include <math.h>
#include <string.h>

#include "error.h"

static int gcd(int a, int b) {
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int64_t dmx__resample_frac_len(int64_t L, int old_sr, int new_sr) {
    int g = gcd(old_sr, new_sr);
    return (int64_t)(new_sr / g) * L / (old_sr / g);
}

dmx_status dmx__resample_frac(dmx__arena *ar, const float *x, int rows, int L, int old_sr,
                              int new_sr, int zeros, double rolloff, float *y) {
    if (old_sr < 1 || new_sr < 1 || zeros < 1 || !(rolloff > 0) || L < 1)
        return dmx__fail(DMX_ERR_INVALID_ARG, "resample_frac: bad rates %d -> %d or length %d",
                         old_sr, new_sr, L);
    int g = gcd(old_sr, new_sr);
    const int oldr = old_sr / g, newr = new_sr / g;
    if (oldr > 64 || newr > 64)
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "resample_frac: rates %d -> %d reduce to %d/%d (at most 64 each)", old_sr,
                         new_sr, oldr, newr);
    const int64_t out_len = dmx__resample_frac_len(L, oldr, newr);
    if (oldr == newr) {
        memcpy(y, x, (size_t)rows * L * sizeof *y);
        return DMX_OK;
    }
    const double sr = (oldr < newr ? oldr : newr) * rolloff;
    const int width = (int)ceil(zeros * oldr / sr);
    const int taps = 2 * width + oldr;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *kern = dmx__arena_floats(ar, (size_t)newr * taps);
    if (!kern) return dmx__fail(DMX_ERR_NOMEM, "out of memory resampling");
    /* float32 arithmetic in julius' order */
    const float fsr = (float)sr, fz = (float)zeros, fpi = (float)M_PI;
    for (int i = 0; i < newr; i++) {
        float *k = kern + (size_t)i * taps;
        const float off = (float)(-(double)i / newr);
        float sum = 0.0f;
        for (int j = 0; j < taps; j++) {
            float idx = (float)(j - width);
            float t = (off + idx / (float)oldr) * fsr;
            if (t < -fz) t = -fz;
            if (t > fz) t = fz;
            t *= fpi;
            float w = cosf(t / fz / 2.0f);
            w = w * w;
            float s = t == 0.0f ? 1.0f : sinf(t) / t;
            k[j] = s * w;
            sum += k[j];
        }
        for (int j = 0; j < taps; j++) k[j] /= sum;
    }
    /* y[n * newr + i] = sum_j kern_i[j] * x[clamp(n * oldr + j - width)] */
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * L;
        float *yr = y + (size_t)r * out_len;
        for (int64_t o = 0; o < out_len; o++) {
            int64_t n = o / newr;
            int i = (int)(o % newr);
            const float *k = kern + (size_t)i * taps;
            int64_t base = n * oldr - width;
            float acc = 0.0f;
            if (base >= 0 && base + taps <= L) {
                const float *xs = xr + base;
                for (int j = 0; j < taps; j++) acc += k[j] * xs[j];
            } else {
                for (int j = 0; j < taps; j++) {
                    int64_t p = base + j;
                    p = p < 0 ? 0 : p >= L ? L - 1 : p;
                    acc += k[j] * xr[p];
                }
            }
            yr[o] = acc;
        }
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}
