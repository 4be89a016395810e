/*
 * roformer_config.c - MSST YAML -> dmx__rf_config (see roformer_config.h).
 * Defaults are those of BSRoformer.__init__ / MelBandRoformer.__init__ in
 * MSST's models/bs_roformer at the commit the fixtures pin.
 */
#include "roformer_config.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

typedef struct rd {
    const char *what;
    const char *sec; /* section name for messages */
} rd;

static dmx_status bad(const rd *r, const char *key, const dmx__ynode *v, const char *expected) {
    return dmx__fail(DMX_ERR_MODEL, "%s: line %d: %s.%s is a %s ('%s'), expected %s", r->what,
                     v->line, r->sec, key, dmx__yaml_type_name(v),
                     v->kind == DMX__Y_SCALAR ? v->str : "...", expected);
}

static dmx_status missing(const rd *r, const char *key) {
    return dmx__fail(DMX_ERR_MODEL, "%s: %s.%s is missing", r->what, r->sec, key);
}

/* Integer key in [lo, hi]; `def` when absent unless required. */
static dmx_status get_int(const rd *r, const dmx__ynode *m, const char *key, int required,
                          int64_t def, int64_t lo, int64_t hi, int64_t *out) {
    const dmx__ynode *v = dmx__yaml_get(m, key);
    if (!v) {
        if (required) return missing(r, key);
        *out = def;
        return DMX_OK;
    }
    int64_t x;
    int b;
    if (dmx__yaml_int(v, &x) != 0) {
        if (dmx__yaml_bool(v, &b) == 0)
            x = b; /* Python bool is an int */
        else
            return bad(r, key, v, "an integer");
    }
    if (x < lo || x > hi)
        return dmx__fail(DMX_ERR_MODEL, "%s: line %d: %s.%s = %lld is out of range [%lld, %lld]",
                         r->what, v->line, r->sec, key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return DMX_OK;
}

static dmx_status get_i(const rd *r, const dmx__ynode *m, const char *key, int required, int def,
                        int lo, int hi, int *out) {
    int64_t x;
    dmx_status s = get_int(r, m, key, required, def, lo, hi, &x);
    if (s == DMX_OK) *out = (int)x;
    return s;
}

static dmx_status get_bool(const rd *r, const dmx__ynode *m, const char *key, int def, int *out) {
    const dmx__ynode *v = dmx__yaml_get(m, key);
    if (!v) {
        *out = def;
        return DMX_OK;
    }
    int64_t x;
    if (dmx__yaml_bool(v, out) == 0) return DMX_OK;
    if (dmx__yaml_int(v, &x) == 0) {
        *out = x != 0;
        return DMX_OK;
    }
    return bad(r, key, v, "a boolean");
}

static dmx_status get_num(const rd *r, const dmx__ynode *m, const char *key) {
    const dmx__ynode *v = dmx__yaml_get(m, key);
    double d;
    if (v && dmx__yaml_float(v, &d) != 0) return bad(r, key, v, "a number");
    return DMX_OK;
}

#define TRY(x)                       \
    do {                             \
        dmx_status s_ = (x);         \
        if (s_ != DMX_OK) return s_; \
    } while (0)

static dmx_status read_model(const rd *r, const dmx__ynode *m, dmx__rf_config *c) {
    const dmx__ynode *fpb = dmx__yaml_get(m, "freqs_per_bands");
    const dmx__ynode *nb = dmx__yaml_get(m, "num_bands");
    if (fpb && nb)
        return dmx__fail(DMX_ERR_MODEL,
                         "%s: model has both freqs_per_bands (BS-RoFormer) and num_bands (Mel-Band "
                         "RoFormer)",
                         r->what);
    if (!fpb && !nb)
        return dmx__fail(
            DMX_ERR_MODEL,
            "%s: model has neither freqs_per_bands (BS-RoFormer) nor num_bands (Mel-Band "
            "RoFormer): not a RoFormer config",
            r->what);
    c->kind = fpb ? DMX__RF_BS : DMX__RF_MEL;
    int bs = c->kind == DMX__RF_BS;
    TRY(get_i(r, m, "dim", 1, 0, 1, 1 << 16, &c->dim));
    TRY(get_i(r, m, "depth", 1, 0, 1, 1024, &c->depth));
    TRY(get_bool(r, m, "stereo", 0, &c->stereo));
    TRY(get_i(r, m, "num_stems", 0, 1, 1, DMX__RF_MAX_STEMS, &c->num_stems));
    TRY(get_i(r, m, "time_transformer_depth", 0, 2, 1, 1024, &c->time_depth));
    TRY(get_i(r, m, "freq_transformer_depth", 0, 2, 1, 1024, &c->freq_depth));
    TRY(get_i(r, m, "linear_transformer_depth", 0, 0, 0, 1024, &c->linear_depth));
    TRY(get_i(r, m, "dim_head", 0, 64, 2, 1 << 12, &c->dim_head));
    if (c->dim_head % 2)
        return dmx__fail(DMX_ERR_MODEL,
                         "%s: model.dim_head = %d must be even (rotary embeddings rotate pairs)",
                         r->what, c->dim_head);
    TRY(get_i(r, m, "heads", 0, 8, 1, 1024, &c->heads));
    TRY(get_i(r, m, "dim_freqs_in", 0, 1025, 1, 1 << 20, &c->dim_freqs_in));
    TRY(get_i(r, m, "sample_rate", 0, 44100, 1, 1 << 24, &c->sample_rate));
    TRY(get_i(r, m, "stft_n_fft", 0, 2048, 4, 1 << 16, &c->n_fft));
    TRY(get_i(r, m, "stft_hop_length", 0, 512, 1, 1 << 16, &c->hop));
    TRY(get_i(r, m, "stft_win_length", 0, 2048, 1, 1 << 16, &c->win_length));
    if (c->win_length > c->n_fft)
        return dmx__fail(DMX_ERR_MODEL, "%s: model.stft_win_length = %d exceeds stft_n_fft = %d",
                         r->what, c->win_length, c->n_fft);
    if (c->n_fft % 2)
        return dmx__fail(DMX_ERR_MODEL, "%s: model.stft_n_fft = %d must be even", r->what,
                         c->n_fft);
    TRY(get_bool(r, m, "stft_normalized", 0, &c->normalized));
    TRY(get_bool(r, m, "zero_dc", 1, &c->zero_dc));
    TRY(get_i(r, m, "mask_estimator_depth", 0, bs ? 2 : 1, 1, 64, &c->mask_estimator_depth));
    TRY(get_i(r, m, "mlp_expansion_factor", 0, 4, 1, 1024, &c->mlp_expansion_factor));
    TRY(get_bool(r, m, "skip_connection", 0, &c->skip_connection));
    TRY(get_bool(r, m, "match_input_audio_length", 0, &c->match_input_audio_length));
    int flag;
    TRY(get_bool(r, m, "flash_attn", 1, &flag));
    TRY(get_bool(r, m, "use_torch_checkpoint", 0, &flag));
    TRY(get_num(r, m, "attn_dropout"));
    TRY(get_num(r, m, "ff_dropout"));
    TRY(get_bool(r, m, "use_pope", 0, &flag));
    if (flag)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: model.use_pope: PoPE embeddings are not supported", r->what);
    TRY(get_bool(r, m, "sage_attention", 0, &flag));
    if (flag)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: model.sage_attention: not accepted by the reference constructor "
                         "either (remove the "
                         "line: it does not change the weights)",
                         r->what);
    int freqs = c->n_fft / 2 + 1;
    if (bs) {
        if (fpb->kind != DMX__Y_SEQ) return bad(r, "freqs_per_bands", fpb, "a list of integers");
        if (fpb->n < 2 || fpb->n > DMX__RF_MAX_BANDS)
            return dmx__fail(DMX_ERR_MODEL,
                             "%s: line %d: model.freqs_per_bands has %zu entries (2 to %d allowed)",
                             r->what, fpb->line, fpb->n, DMX__RF_MAX_BANDS);
        int64_t sum = 0;
        for (size_t i = 0; i < fpb->n; i++) {
            int64_t x;
            if (dmx__yaml_int(fpb->items[i], &x) != 0 || x < 1 || x > freqs)
                return dmx__fail(
                    DMX_ERR_MODEL,
                    "%s: line %d: model.freqs_per_bands[%zu] is not a bin count in [1, %d]",
                    r->what, fpb->items[i]->line, i, freqs);
            c->freqs_per_bands[i] = (int)x;
            sum += x;
        }
        c->n_bands = (int)fpb->n;
        if (sum != freqs)
            return dmx__fail(DMX_ERR_MODEL,
                             "%s: model.freqs_per_bands sums to %lld, but stft_n_fft = %d gives %d "
                             "frequency bins",
                             r->what, (long long)sum, c->n_fft, freqs);
    } else {
        TRY(get_i(r, m, "num_bands", 1, 60, 2, DMX__RF_MAX_BANDS, &c->n_bands));
    }
    return DMX_OK;
}

dmx_status dmx__rf_config_read(const dmx__ynode *root, const char *what, dmx__rf_config *c) {
    memset(c, 0, sizeof *c);
    rd r = {what ? what : "config", ""};
    if (!root || root->kind != DMX__Y_MAP)
        return dmx__fail(
            DMX_ERR_MODEL,
            "%s: the config is a %s, expected a mapping with model:, audio:, inference:", r.what,
            dmx__yaml_type_name(root));
    static const char *const secs[] = {"model", "audio", "inference", "training"};
    const dmx__ynode *sec[4];
    for (int i = 0; i < 4; i++) {
        sec[i] = dmx__yaml_get(root, secs[i]);
        if (!sec[i])
            return dmx__fail(DMX_ERR_MODEL, "%s: section '%s:' is missing", r.what, secs[i]);
        if (sec[i]->kind != DMX__Y_MAP)
            return dmx__fail(DMX_ERR_MODEL, "%s: line %d: '%s:' is a %s, expected a mapping",
                             r.what, sec[i]->line, secs[i], dmx__yaml_type_name(sec[i]));
    }
    r.sec = "model";
    TRY(read_model(&r, sec[0], c));

    r.sec = "audio";
    TRY(get_i(&r, sec[1], "sample_rate", 0, 44100, 1, 1 << 24, &c->audio_sample_rate));
    int64_t cs;
    if (dmx__yaml_get(sec[2], "chunk_size")) {
        r.sec = "inference";
        TRY(get_int(&r, sec[2], "chunk_size", 1, 0, 2, (int64_t)1 << 31, &cs));
    } else {
        TRY(get_int(&r, sec[1], "chunk_size", 1, 0, 2, (int64_t)1 << 31, &cs));
    }
    c->chunk_size = cs;
    r.sec = "inference";
    TRY(get_i(&r, sec[2], "num_overlap", 1, 0, 1, 1 << 16, &c->num_overlap));
    TRY(get_i(&r, sec[2], "batch_size", 0, 1, 1, 1 << 16, &c->batch_size));
    /* MSST's inference.py normalises the whole mix (mean and population std
     * of its mono sum) when inference.normalize is True (the boolean only:
     * `is True`); not implemented, so refused rather than ignored. */
    const dmx__ynode *nz = dmx__yaml_get(sec[2], "normalize");
    int nzb = 0;
    if (nz && dmx__yaml_bool(nz, &nzb) == 0 && nzb)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: line %d: inference.normalize: true (MSST's whole-track "
                         "normalisation) is not supported; set it to false to run the model "
                         "without it",
                         r.what, nz->line);

    r.sec = "training";
    const dmx__ynode *tgt = dmx__yaml_get(sec[3], "target_instrument");
    const char *name;
    if (tgt && !dmx__yaml_is_null(tgt) && !(tgt->kind == DMX__Y_SCALAR && tgt->str[0] == 0)) {
        if (dmx__yaml_str(tgt, &name) != 0) return bad(&r, "target_instrument", tgt, "a stem name");
        if (strlen(name) >= sizeof c->stems[0])
            return dmx__fail(DMX_ERR_MODEL, "%s: training.target_instrument is too long", r.what);
        strcpy(c->stems[0], name);
        c->n_stem_names = 1;
    } else {
        const dmx__ynode *ins = dmx__yaml_get(sec[3], "instruments");
        if (!ins) return missing(&r, "instruments");
        if (ins->kind != DMX__Y_SEQ || ins->n == 0)
            return bad(&r, "instruments", ins, "a list of stem names");
        if (ins->n > DMX__RF_MAX_STEMS)
            return dmx__fail(DMX_ERR_MODEL, "%s: training.instruments has %zu names (at most %d)",
                             r.what, ins->n, DMX__RF_MAX_STEMS);
        for (size_t i = 0; i < ins->n; i++) {
            if (dmx__yaml_str(ins->items[i], &name) != 0 || strlen(name) >= sizeof c->stems[0])
                return dmx__fail(DMX_ERR_MODEL,
                                 "%s: line %d: training.instruments[%zu] is not a stem name",
                                 r.what, ins->items[i]->line, i);
            strcpy(c->stems[i], name);
        }
        c->n_stem_names = (int)ins->n;
    }
    if (c->n_stem_names != c->num_stems)
        return dmx__fail(DMX_ERR_MODEL,
                         "%s: model.num_stems = %d but training names %d stem%s (%s)", r.what,
                         c->num_stems, c->n_stem_names, c->n_stem_names == 1 ? "" : "s",
                         c->n_stem_names == 1 ? "target_instrument" : "instruments");
    return DMX_OK;
}

dmx_status dmx__rf_config_load(const char *path, dmx__rf_config *cfg) {
    dmx__ynode *root = NULL;
    dmx_status s = dmx__yaml_load(path, &root);
    if (s != DMX_OK) return s;
    s = dmx__rf_config_read(root, path, cfg);
    dmx__yaml_free(root);
    return s;
}
