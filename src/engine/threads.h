/*
 * threads.h - internal: the engine's one-time BLAS thread setting
 * (threads.c; the public rule is dmx_threads_divide in demix.h).
 */
#ifndef DMX_ENGINE_THREADS_H
#define DMX_ENGINE_THREADS_H

/* Sets OpenBLAS to one thread, once per process; every later call is a
 * no-op. Called before the engine's first evaluation. */
void dmx__blas_init(void);

#endif
