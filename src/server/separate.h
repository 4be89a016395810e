/*
 * separate.h - the form of POST /separate as data: the fields as received
 * and the validated request they make. srv_separate_parse() is pure (no
 * I/O, no globals) so a unit test can cover every field rule.
 */
#ifndef DEMIX_SERVER_SEPARATE_H
#define DEMIX_SERVER_SEPARATE_H

#include <stddef.h>

#include "errors.h"

#define SRV_FORM_FIELD 256 /* bytes kept per text field, NUL included */

/* POST /separate's defaults and bounds, written once: srv_separate_defaults
 * and the parser apply them and /openapi.json documents them. 1 shift like upstream's CLI and
 * Separator (and `demix separate`), so the same request gives the same
 * stems everywhere. */
#define SRV_SEP_DEFAULT_MODEL   "htdemucs"
#define SRV_SEP_DEFAULT_FORMAT  "wav"
#define SRV_SEP_DEFAULT_SHIFTS  1
#define SRV_SEP_MAX_SHIFTS      100
#define SRV__STR2(x)            #x
#define SRV__STR(x)             SRV__STR2(x)
#define SRV_SEP_DEFAULT_OVERLAP 0.25

/* The text fields as sent ("" when absent). */
typedef struct srv_separate_fields {
    char model_name[SRV_FORM_FIELD], two_stems[SRV_FORM_FIELD], format[SRV_FORM_FIELD],
        shifts[SRV_FORM_FIELD], overlap[SRV_FORM_FIELD], wait[SRV_FORM_FIELD];
} srv_separate_fields;

/* A valid request; an absent field takes its default (srv_separate_defaults). */
typedef struct srv_separate_request {
    char model[100];    /* a model name (not yet known to exist) */
    char two_stems[60]; /* "" = all stems */
    char format[8];     /* wav, flac or mp3 */
    int shifts;         /* 0..100 */
    double overlap;     /* [0, 1) */
    int wait;           /* answer when the job ends */
    /* The first of shifts/overlap the client sent ("" when neither): Demucs
     * run options, refused for a RoFormer (option_not_applicable). */
    char demucs_option[8];
} srv_separate_request;

/* The defaults: htdemucs, all stems, wav, 1 shift (as upstream's CLI and
 * `demix separate`), overlap 0.25, no wait. */
extern const srv_separate_request srv_separate_defaults;

/* Validates the fields into *out. Returns 0, or -1 with *code (always
 * SRV_E_INVALID_ARGUMENT today) and a message for the client in msg. */
int srv_separate_parse(const srv_separate_fields *f, srv_separate_request *out, srv_error *code,
                       char *msg, size_t msgn);

#endif
