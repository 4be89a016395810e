/*
 * blascore.c - which OpenBLAS kernels the process runs (demix.h, BLAS
 * kernels): printed by `demix --version` and logged at server start, since
 * they set the matrix-product speed (an AVX-512 machine on OpenBLAS's
 * Haswell kernels, e.g. under OPENBLAS_CORETYPE=Haswell, reaches half its
 * sgemm peak).
 */
#include <cblas.h>

#include "demix/demix.h"

const char *dmx_blas_core(void) {
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}
