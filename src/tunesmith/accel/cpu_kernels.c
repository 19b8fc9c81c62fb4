/* tunesmith's CPU kernels: see cpu_kernels.py for why each exists. Compiled on first use with the
 * system C compiler (-O3 -march=native -fno-math-errno -fopenmp); OpenMP here is torch's own libgomp (same soname, so
 * the loader reuses the copy torch loaded): one thread pool, sized by torch.set_num_threads.
 * Every result is independent of the thread count: fixed chunks, partial sums added in chunk order. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 32768

static inline float bf16_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline float f32_f32(float x) { return x; }

/* Round to nearest even, as torch's cast; a NaN stays a NaN (adding the rounding bias could carry it
 * into an infinity or zero). */
static inline uint16_t to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    uint16_t rounded = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    uint16_t nan = (uint16_t)((u >> 16) | 0x40u);
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded;
}

/* Gradients come as a pointer per chunk (to the gradient of the chunk's first element): the bf16
 * gradients stay where autograd left them, one tensor per weight, instead of being gathered into one
 * buffer first. chunks: (start, end, group) rows over the flat masters; a chunk lies within one tensor. */

/* Sum of squares: 16 fp32 lanes within a chunk (as torch's norm accumulates in fp32), fp64 across. */
#define SUM_SQUARES(NAME, T, LOAD)                                                        \
double NAME(const uint64_t *gp, const int64_t *chunks, int64_t nchunks) {                 \
    double *part = malloc((size_t)(nchunks > 0 ? nchunks : 1) * sizeof(double));          \
    _Pragma("omp parallel for schedule(static)")                                          \
    for (int64_t c = 0; c < nchunks; c++) {                                               \
        const T *x = (const T *)(uintptr_t)gp[c];                                         \
        int64_t len = chunks[3 * c + 1] - chunks[3 * c], i = 0;                           \
        float acc[16] = {0};                                                              \
        for (; i + 16 <= len; i += 16)                                                    \
            for (int j = 0; j < 16; j++) { float y = LOAD(x[i + j]); acc[j] += y * y; }   \
        double s = 0;                                                                     \
        for (int j = 0; j < 16; j++) s += acc[j];                                         \
        for (; i < len; i++) { float y = LOAD(x[i]); s += (double)y * y; }                \
        part[c] = s;                                                                      \
    }                                                                                     \
    double s = 0;                                                                         \
    for (int64_t c = 0; c < nchunks; c++) s += part[c];                                   \
    free(part);                                                                           \
    return s;                                                                             \
}
SUM_SQUARES(sum_squares_bf16, uint16_t, bf16_f32)
SUM_SQUARES(sum_squares_f32, float, f32_f32)

/* torch's AdamW for one element (decoupled weight decay, lerp for the first moment, bias correction by
 * the step): updates the moments, returns the new master. Hyper holds hp's 7 floats per group, in order:
 * 1 - lr*wd, lr/(1 - b1^t), 1 - b1, b2, 1 - b2, 1/sqrt(1 - b2^t), eps. By value, so the loops calling
 * this keep them in registers. */
typedef struct { float decay, step, w1, f2, w2, ibc2, eps; } Hyper;

static inline Hyper hyper(const float *h) { Hyper k = {h[0], h[1], h[2], h[3], h[4], h[5], h[6]}; return k; }

static inline float adamw_elem(float g, float p, float *restrict m, float *restrict v, Hyper k) {
    const float mi = *m + k.w1 * (g - *m);
    const float vi = k.f2 * *v + k.w2 * g * g;
    *m = mi; *v = vi;
    return p * k.decay - k.step * mi / (sqrtf(vi) * k.ibc2 + k.eps);
}

/* One AdamW step over the flat masters, hp: a Hyper per group. The gradient is multiplied by `scale`
 * (clipping). Writes the master, both moments and, unless w16 is NULL (parameters that compute in fp32),
 * the master's bf16 copy. */
#define ADAMW(NAME, T, LOAD)                                                                      \
void NAME(const uint64_t *gp, float *restrict p, float *restrict m, float *restrict v,            \
          uint16_t *restrict w16, const int64_t *chunks, int64_t nchunks, const float *hp,         \
          float scale) {                                                                          \
    _Pragma("omp parallel for schedule(static)")                                                  \
    for (int64_t c = 0; c < nchunks; c++) {                                                       \
        int64_t a = chunks[3 * c], n = chunks[3 * c + 1] - a;                                     \
        const T *restrict g = (const T *)(uintptr_t)gp[c];                                        \
        float *restrict pc = p + a, *restrict mc = m + a, *restrict vc = v + a;                   \
        const Hyper k = hyper(hp + 7 * chunks[3 * c + 2]);                                        \
        if (w16) {                                                                                \
            uint16_t *restrict wc = w16 + a;                                                      \
            for (int64_t i = 0; i < n; i++) {                                                     \
                pc[i] = adamw_elem(LOAD(g[i]) * scale, pc[i], mc + i, vc + i, k);                 \
                wc[i] = to_bf16(pc[i]);                                                           \
            }                                                                                     \
        } else {                                                                                  \
            for (int64_t i = 0; i < n; i++)                                                       \
                pc[i] = adamw_elem(LOAD(g[i]) * scale, pc[i], mc + i, vc + i, k);                 \
        }                                                                                         \
    }                                                                                             \
}
ADAMW(adamw_bf16, uint16_t, bf16_f32)
ADAMW(adamw_f32, float, f32_f32)

/* The same AdamW on chosen rows of a (rows x D) fp32 table and its moments: the word-embedding rows a
 * batch used (lazy rows, train/optim.py). g holds one gradient row per entry of `rows` (each row once). */
void adamw_rows_f32(const int64_t *rows, int64_t nrows, const float *restrict g, float *restrict p,
                    float *restrict m, float *restrict v, int64_t D, const float *hp) {
    const Hyper k = hyper(hp);
    _Pragma("omp parallel for schedule(static) if (nrows * D > 16384)")
    for (int64_t r = 0; r < nrows; r++) {
        float *restrict pc = p + rows[r] * D, *restrict mc = m + rows[r] * D, *restrict vc = v + rows[r] * D;
        const float *restrict gc = g + r * D;
        for (int64_t i = 0; i < D; i++) pc[i] = adamw_elem(gc[i], pc[i], mc + i, vc + i, k);
    }
}

/* Dropout in one pass: out = x * (kept ? scale : 0), computed in fp32 and rounded as torch's multiply by a
 * mask would be. Kept: SplitMix64 at the element's index (counter-based, so any split across threads
 * draws the same mask) has top 32 bits >= threshold, i.e. probability 1 - threshold / 2^32. The backward
 * is the same call on the gradient with the same seed. scale: 1/(1-p) rounded to the dtype. */
#define DROPOUT(NAME, T, LOAD, STORE)                                                             \
void NAME(const T *x, T *out, int64_t n, uint64_t seed, uint64_t threshold, float scale) {       \
    _Pragma("omp parallel for schedule(static) if (n > 16384)")                                   \
    for (int64_t i = 0; i < n; i++) {                                                             \
        uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;                                  \
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;                                              \
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;                                              \
        out[i] = STORE(LOAD(x[i]) * (((z ^ (z >> 31)) >> 32) >= threshold ? scale : 0.0f));      \
    }                                                                                             \
}
DROPOUT(dropout_bf16, uint16_t, bf16_f32, to_bf16)
DROPOUT(dropout_f32, float, f32_f32, f32_f32)
