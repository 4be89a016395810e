/*
 * fuzz_audio.c - fuzz target for the FFmpeg decode wrapper (src/audio/decode.c):
 * arbitrary bytes as an uploaded file, opened with dmx_decoder_open and read
 * to the end (capped), as the service and the pipeline do with uploads.
 *
 * The decoder takes a path, so the input goes into one memfd, reopened by
 * its /proc/self/fd name (no disk I/O per run). The last byte picks the
 * output format, so one corpus covers pass-through, resampling, the mono
 * mixdown, mono expansion, rewind and dmx_audio_load_ex. Decoding stops
 * after MAX_FRAMES output frames, so a header claiming hours stays fast.
 *
 * Built as fuzz_audio (libFuzzer, clang) and replay_audio (any compiler) by
 * tests/fuzz.cmake; seeds in tests/fuzz/corpus/audio.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "demix/audio.h"
#include "demix/demix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAMES (1 << 18) /* ~6 s at 44.1 kHz */
#define CHUNK 4096

static int memfd = -1;
static char path[64];

/* Engine and FFmpeg messages are formatted (that code runs) but dropped. */
static void quiet(void *user, dmx_log_level level, const char *msg) {
    (void)user;
    (void)level;
    (void)msg;
}

static int setup(void) {
    if (memfd >= 0) return 0;
    memfd = memfd_create("fuzz_audio", MFD_CLOEXEC);
    if (memfd < 0) return -1;
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    if (!getenv("DEMIX_FUZZ_VERBOSE")) dmx_log_set(quiet, NULL);
    return 0;
}

/* Reads up to MAX_FRAMES frames; returns how many. */
static int64_t drain(dmx_decoder *d, float *const *bufs) {
    int64_t total = 0, got = 0;
    while (total < MAX_FRAMES && dmx_decoder_read(d, bufs, CHUNK, &got) == DMX_OK && got > 0)
        total += got;
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (setup() < 0) abort();
    if (ftruncate(memfd, 0) != 0) abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(memfd, data + off, size - off, (off_t)off);
        if (w <= 0) abort();
        off += (size_t)w;
    }
    static const struct {
        int32_t rate, channels;
    } modes[] = {{0, 0}, {44100, 2}, {44100, 1}, {22050, 2}};
    unsigned mode = size ? data[size - 1] % 8u : 0;
    int32_t rate = modes[mode % 4].rate, channels = modes[mode % 4].channels;

    if (mode == 7) {
        /* The whole-file helper (its own growth and trimming); only for
         * small inputs, which cannot decode to much. */
        if (size > 16384) return 0;
        float **planar = NULL;
        int64_t frames = 0;
        int32_t orate = 0, och = 0;
        if (dmx_audio_load_ex(path, rate, channels, &planar, &frames, &orate, &och) == DMX_OK)
            dmx_audio_free(planar, och);
        return 0;
    }

    dmx_decoder *d = NULL;
    if (dmx_decoder_open(path, rate, channels, &d) != DMX_OK) return 0;
    /* What the service and the pipeline ask of an open decoder. */
    volatile int64_t sink = dmx_decoder_duration_hint(d) + dmx_decoder_source_rate(d) +
                            dmx_decoder_source_channels(d);
    sink += (int64_t)dmx_decoder_codec_name(d)[0] + (int64_t)dmx_decoder_container_name(d)[0];
    int nch = dmx_decoder_channels(d);
    if (nch < 1 || nch > DMX_AUDIO_MAX_CHANNELS || dmx_decoder_rate(d) <= 0) abort();
    float *bufs[DMX_AUDIO_MAX_CHANNELS] = {0};
    for (int c = 0; c < nch; c++)
        if (!(bufs[c] = malloc(CHUNK * sizeof(float)))) abort();
    int64_t first = drain(d, bufs);
    /* Two-pass normalisation rewinds; the second pass must match the first. */
    if (mode >= 4 && first < MAX_FRAMES && dmx_decoder_rewind(d) == DMX_OK) {
        int64_t second = drain(d, bufs);
        if (second != first) {
            fprintf(stderr, "fuzz_audio: rewind gave %lld frames, first pass %lld\n",
                    (long long)second, (long long)first);
            abort();
        }
    }
    sink += first;
    (void)sink;
    for (int c = 0; c < nch; c++) free(bufs[c]);
    dmx_decoder_close(d);
    return 0;
}
