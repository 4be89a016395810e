/*
 * model.c - the public engine API (demix.h): loading models and bags
 * (upstream's BagOfModels: members of any family, per-source weights, the
 * `segment:` override), RoFormer models from an MSST config and checkpoint
 * (one member; apply.c streams them through MSST's chunking), model queries
 * and sessions. Members are networks
 * behind net.h; everything here reads their dmx__net_desc.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "bagyaml.h"
#include "ckpt.h"
#include "demix/demix.h"
#include "demix/repo.h"
#include "error.h"
#include "roformer.h"

/* ------------------------------------------------------------------- models */

static dmx_status load_th(const char *path, dmx__net **out) {
    dmx__ckpt *ck = NULL;
    dmx_status st = dmx__ckpt_load(path, &ck);
    if (st != DMX_OK) return st;
    return dmx__net_build(ck, out); /* takes ownership of ck */
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static dmx_status finish_model(dmx_model *m) {
    const dmx__net_desc *first = &m->members[0]->desc;
    m->n_sources = first->n_sources;
    m->channels = first->audio_channels;
    m->samplerate = first->samplerate;
    m->segment = first->segment;
    m->max_segment = INFINITY;
    for (int s = 0; s < first->n_sources; s++) m->sources[s] = first->sources[s];
    for (int k = 0; k < m->n_members; k++) {
        const dmx__net_desc *o = &m->members[k]->desc;
        if (o->n_sources != first->n_sources || o->audio_channels != first->audio_channels ||
            o->samplerate != first->samplerate)
            return dmx__fail(
                DMX_ERR_MODEL,
                "bag member %d has different sources, channels or sample rate than member 0", k);
        for (int s = 0; s < first->n_sources; s++)
            if (strcmp(o->sources[s], first->sources[s]) != 0)
                return dmx__fail(DMX_ERR_MODEL,
                                 "bag member %d has source '%s' where member 0 has '%s'", k,
                                 o->sources[s], first->sources[s]);
        if (o->segment < m->segment) m->segment = o->segment;
        if (o->fixed_segment && o->segment < m->max_segment) m->max_segment = o->segment;
        m->n_params += o->n_params;
    }
    m->totals = calloc((size_t)m->n_sources, sizeof(double));
    if (!m->weights) m->weights = malloc(sizeof(float) * (size_t)m->n_members * m->n_sources);
    if (!m->totals || !m->weights) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    if (!m->weights_given)
        for (int i = 0; i < m->n_members * m->n_sources; i++) m->weights[i] = 1.0f;
    for (int k = 0; k < m->n_members; k++)
        for (int s = 0; s < m->n_sources; s++)
            m->totals[s] += m->weights[(size_t)k * m->n_sources + s];
    for (int s = 0; s < m->n_sources; s++)
        if (m->totals[s] == 0.0)
            return dmx__fail(DMX_ERR_MODEL, "bag weights for source '%s' sum to zero",
                             m->sources[s]);
    return DMX_OK;
}

static dmx_status load_bag(const char *path, dmx_model *m) {
    dmx__bag_spec *spec = NULL;
    dmx_status st = dmx__bag_yaml_load(path, &spec);
    if (st != DMX_OK) return st;
    m->n_members = 0;
    m->members = calloc(spec->n_models ? spec->n_models : 1, sizeof *m->members);
    if (!m->members) {
        dmx__bag_spec_free(spec);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < spec->n_models; i++) {
        char *mp = NULL;
        st = dmx__bag_resolve(path, spec->models[i], &mp);
        if (st != DMX_OK) break;
        st = load_th(mp, &m->members[i]);
        if (st != DMX_OK) {
            char detail[600];
            snprintf(detail, sizeof detail, "%s", dmx_last_error());
            dmx__fail(st, "bag member '%s' (%s): %s", spec->models[i], mp, detail);
            free(mp);
            break;
        }
        free(mp);
        m->n_members++;
    }
    /* BagOfModels(segment=...): raises a member's segment to the bag's when
     * the bag's is larger, never for fixed-segment members (HTDemucs). The
     * bag's value is a YAML number, i.e. a Python float or int. */
    for (int i = 0; st == DMX_OK && spec->has_segment && i < m->n_members; i++) {
        dmx__net_desc *d = &m->members[i]->desc;
        if (d->fixed_segment || !(spec->segment > d->segment)) continue;
        d->segment = spec->segment;
        d->seg_num = d->seg_den = 0;
        d->training_length = dmx__segment_length(0, 0, spec->segment, d->samplerate);
        if (d->training_length < 1)
            st = dmx__fail(DMX_ERR_MODEL, "bag segment %g s is out of range", spec->segment);
    }
    if (st == DMX_OK && spec->has_weights) {
        int S = m->members[0]->desc.n_sources;
        if (spec->weight_rows != spec->n_models || spec->weight_cols != (size_t)S) {
            st = dmx__fail(DMX_ERR_MODEL,
                           "bag weights are %zux%zu but the bag has %zu models of %d sources",
                           spec->weight_rows, spec->weight_cols, spec->n_models, S);
        } else {
            m->weights = malloc(sizeof(float) * spec->n_models * S);
            if (!m->weights)
                st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
            else {
                for (size_t i = 0; i < spec->n_models * S; i++)
                    m->weights[i] = (float)spec->weights[i];
                m->weights_given = 1;
            }
        }
    }
    dmx__bag_spec_free(spec);
    return st;
}

static dmx_status finish_or_free(dmx_model *m, dmx_status st, const char *path, dmx_model **out) {
    if (st == DMX_OK && m->n_members == 0)
        st = dmx__fail(DMX_ERR_MODEL, "%s: bag lists no models", path);
    if (st == DMX_OK) st = finish_model(m);
    if (st != DMX_OK) {
        dmx_model_free(m);
        return st;
    }
    *out = m;
    return DMX_OK;
}

dmx_status dmx_model_load_config(const char *config_path, const char *ckpt_path, dmx_model **out) {
    dmx__clear_error();
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_model_load_config: out is NULL");
    *out = NULL;
    if (!config_path || !ckpt_path)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_model_load_config: NULL path");
    dmx_model *m = calloc(1, sizeof *m);
    if (!m || !(m->members = calloc(1, sizeof *m->members))) {
        free(m);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    dmx_status st = dmx__roformer_net_load(config_path, ckpt_path, &m->members[0]);
    if (st == DMX_OK) m->n_members = 1;
    return finish_or_free(m, st, config_path, out);
}

dmx_status dmx_model_load(const char *path, dmx_model **out) {
    dmx__clear_error();
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_model_load: out is NULL");
    *out = NULL;
    if (!path) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_model_load: path is NULL");
    dmx_model *m = calloc(1, sizeof *m);
    if (!m) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    dmx_status st;
    if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
        /* an MSST config (repo.h's rule) or an upstream bag */
        char *ckpt = NULL;
        st = dmx_repo_config_checkpoint(path, &ckpt);
        if (st != DMX_OK || ckpt) {
            free(m);
            if (st == DMX_OK) st = dmx_model_load_config(path, ckpt, out);
            free(ckpt);
            return st;
        }
        st = load_bag(path, m);
    } else {
        m->members = calloc(1, sizeof *m->members);
        if (!m->members)
            st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
        else {
            st = load_th(path, &m->members[0]);
            if (st == DMX_OK) m->n_members = 1;
        }
    }
    return finish_or_free(m, st, path, out);
}

void dmx_model_free(dmx_model *m) {
    if (!m) return;
    for (int k = 0; k < m->n_members; k++) dmx__net_free(m->members[k]);
    free(m->members);
    free(m->weights);
    free(m->totals);
    free(m);
}

int32_t dmx_model_n_sources(const dmx_model *m) { return m ? m->n_sources : 0; }
const char *dmx_model_source_name(const dmx_model *m, int32_t i) {
    return (m && i >= 0 && i < m->n_sources) ? m->sources[i] : NULL;
}
int32_t dmx_model_source_index(const dmx_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->n_sources; i++)
        if (strcmp(m->sources[i], name) == 0) return i;
    return -1;
}
int32_t dmx_model_samplerate(const dmx_model *m) { return m ? m->samplerate : 0; }
int32_t dmx_model_channels(const dmx_model *m) { return m ? m->channels : 0; }
double dmx_model_segment(const dmx_model *m) { return m ? m->segment : 0; }
double dmx_model_max_segment(const dmx_model *m) { return m ? m->max_segment : 0; }
int32_t dmx_model_n_members(const dmx_model *m) { return m ? m->n_members : 0; }
int64_t dmx_model_n_params(const dmx_model *m) { return m ? m->n_params : 0; }

/* ----------------------------------------------------------------- sessions */

dmx_status dmx_session_new(const dmx_model *m, dmx_session **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_session_new: out is NULL");
    *out = NULL;
    if (!m) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_session_new: model is NULL");
    dmx_session *s = calloc(1, sizeof *s);
    if (!s) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    s->model = m;
    /* Worker scratch is allocated on first use, sized for one segment. */
    *out = s;
    return DMX_OK;
}

const dmx_model *dmx_session_model(const dmx_session *s) { return s ? s->model : NULL; }

void dmx_session_free(dmx_session *s) {
    if (!s) return;
    for (int i = 0; i < s->n_workers; i++) {
        dmx__worker *w = &s->workers[i];
        dmx__arena_free(&w->arena);
        dmx__big_free(w->seg_in);
        dmx__big_free(w->seg_out);
    }
    free(s);
}
