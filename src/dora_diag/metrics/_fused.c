/* One pass over a block pair: per-channel |a|^2, <a, d> and |d|^2 with d = c - a in fp32.
 *
 * Reads each bf16/fp16/fp32 element of a and c once and keeps no fp32 copy of the block
 * (the unfused kernel in kernels.py writes and re-reads ~24 bytes per element pair).
 * Products and differences are fp32, as in the fallback; partial sums of at most FLUSH
 * terms per lane are added into fp64, so the rounding error of a channel's sums stays at
 * ~FLUSH * 2^-24 relative however long the channel is. No fast-math: NaN/Inf propagate.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { F32 = 0, BF16 = 1, F16 = 2 };
#define LANES 16     /* independent fp32 accumulators along a row: one AVX-512 or two AVX2 registers */
#define FLUSH 256    /* fp32 terms per accumulator before it is added into fp64 */
#define TILE 2048    /* columns per tile when channels are columns: the 3 fp32 partial-sum rows
                        (24 KB) stay in L1, and each row's stretch of the tile is long enough for
                        the hardware prefetcher (256 columns ran at half the speed from memory) */

/* One compiled copy per x86-64 level, chosen at load time; elsewhere the compiler default. */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef CLONES
#define CLONES
#endif

static inline float as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float load_f32(const void *p, Py_ssize_t i) { return ((const float *)p)[i]; }
static inline float load_bf16(const void *p, Py_ssize_t i) { return as_float((uint32_t)((const uint16_t *)p)[i] << 16); }

/* IEEE half to single, exact for every input (subnormals, Inf, NaN) and branch-free so that
 * it vectorises; the construction of the FP16 library (M. Dukhan), also used by PyTorch. */
static inline float load_f16(const void *p, Py_ssize_t i) {
    uint32_t w = (uint32_t)((const uint16_t *)p)[i] << 16;
    uint32_t sign = w & 0x80000000u, two_w = w + w;
    float normalized = as_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    float denormalized = as_float((two_w >> 17) | (126u << 23)) - 0.5f;
    return as_float(sign | (two_w < (1u << 27) ? as_uint(denormalized) : as_uint(normalized)));
}

/* out[0..2][r] += sums over the columns of row r (out is 3 x rows fp64). */
#define ROWS_KERNEL(NAME, LOAD_A, LOAD_C)                                                     \
    CLONES static void NAME(const void *a, const void *c, Py_ssize_t rows, Py_ssize_t cols,   \
                            double *out) {                                                    \
        for (Py_ssize_t r = 0; r < rows; ++r) {                                               \
            Py_ssize_t base = r * cols, j = 0, whole = cols - cols % LANES;                   \
            double s0 = 0, s1 = 0, s2 = 0;                                                    \
            while (j < whole) {                                                               \
                float x0[LANES] = {0}, x1[LANES] = {0}, x2[LANES] = {0};                      \
                Py_ssize_t stop = whole - j > FLUSH * LANES ? j + FLUSH * LANES : whole;      \
                for (; j < stop; j += LANES)                                                  \
                    for (int k = 0; k < LANES; ++k) {                                         \
                        float av = LOAD_A(a, base + j + k), dv = LOAD_C(c, base + j + k) - av; \
                        x0[k] += av * av; x1[k] += av * dv; x2[k] += dv * dv;                 \
                    }                                                                         \
                for (int k = 0; k < LANES; ++k) { s0 += x0[k]; s1 += x1[k]; s2 += x2[k]; }    \
            }                                                                                 \
            for (; j < cols; ++j) {                                                           \
                float av = LOAD_A(a, base + j), dv = LOAD_C(c, base + j) - av;                \
                s0 += av * av; s1 += av * dv; s2 += dv * dv;                                  \
            }                                                                                 \
            out[r] += s0; out[rows + r] += s1; out[2 * rows + r] += s2;                       \
        }                                                                                     \
    }

/* out[0..2][j] += sums over the rows of column j (out is 3 x cols fp64), a tile of columns
 * at a time so that the fp32 partial sums stay in L1 while the rows stream past. */
#define COLS_KERNEL(NAME, LOAD_A, LOAD_C)                                                     \
    CLONES static void NAME(const void *a, const void *c, Py_ssize_t rows, Py_ssize_t cols,   \
                            double *out) {                                                    \
        float x0[TILE], x1[TILE], x2[TILE];                                                   \
        for (Py_ssize_t j0 = 0; j0 < cols; j0 += TILE) {                                      \
            Py_ssize_t n = cols - j0 < TILE ? cols - j0 : TILE;                               \
            for (Py_ssize_t r0 = 0; r0 < rows; r0 += FLUSH) {                                 \
                Py_ssize_t r1 = rows - r0 < FLUSH ? rows : r0 + FLUSH;                        \
                memset(x0, 0, sizeof x0); memset(x1, 0, sizeof x1); memset(x2, 0, sizeof x2); \
                for (Py_ssize_t r = r0; r < r1; ++r) {                                        \
                    Py_ssize_t base = r * cols + j0;                                          \
                    for (Py_ssize_t k = 0; k < n; ++k) {                                      \
                        float av = LOAD_A(a, base + k), dv = LOAD_C(c, base + k) - av;        \
                        x0[k] += av * av; x1[k] += av * dv; x2[k] += dv * dv;                 \
                    }                                                                         \
                }                                                                             \
                for (Py_ssize_t k = 0; k < n; ++k) {                                          \
                    out[j0 + k] += x0[k]; out[cols + j0 + k] += x1[k]; out[2 * cols + j0 + k] += x2[k]; \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

/* Every pairing of the three element types (a fine-tuned fp32 copy of a bf16 base, ...). */
#define KERNELS_OF(A, LOAD_A)                                                                 \
    ROWS_KERNEL(rows_##A##_f32, LOAD_A, load_f32)                                             \
    ROWS_KERNEL(rows_##A##_bf16, LOAD_A, load_bf16)                                           \
    ROWS_KERNEL(rows_##A##_f16, LOAD_A, load_f16)                                             \
    COLS_KERNEL(cols_##A##_f32, LOAD_A, load_f32)                                             \
    COLS_KERNEL(cols_##A##_bf16, LOAD_A, load_bf16)                                           \
    COLS_KERNEL(cols_##A##_f16, LOAD_A, load_f16)
KERNELS_OF(f32, load_f32)
KERNELS_OF(bf16, load_bf16)
KERNELS_OF(f16, load_f16)

typedef void (*kernel_fn)(const void *, const void *, Py_ssize_t, Py_ssize_t, double *);
#define ROW_OF(AXIS, A) {AXIS##_##A##_f32, AXIS##_##A##_bf16, AXIS##_##A##_f16}
static const kernel_fn KERNELS[2][3][3] = {  /* [by_rows][type of a][type of c] */
    {ROW_OF(cols, f32), ROW_OF(cols, bf16), ROW_OF(cols, f16)},
    {ROW_OF(rows, f32), ROW_OF(rows, bf16), ROW_OF(rows, f16)},
};

/* sums(a_addr, c_addr, rows, cols, a_dtype, c_dtype, by_rows, out_addr): adds into the fp64
 * buffer at out_addr; the caller owns the memory and checks shapes, dtypes and contiguity. */
static PyObject *sums(PyObject *self, PyObject *args) {
    unsigned long long a, c, out;
    Py_ssize_t rows, cols;
    int a_type, c_type, by_rows;
    if (!PyArg_ParseTuple(args, "KKnniipK", &a, &c, &rows, &cols, &a_type, &c_type, &by_rows, &out))
        return NULL;
    if (a_type < F32 || a_type > F16 || c_type < F32 || c_type > F16 || rows < 0 || cols < 0) {
        PyErr_SetString(PyExc_ValueError, "sums: bad dtype code or shape");
        return NULL;
    }
    kernel_fn fn = KERNELS[by_rows ? 1 : 0][a_type][c_type];
    Py_BEGIN_ALLOW_THREADS   /* streams run in threads: release the GIL while reading */
    fn((const void *)(uintptr_t)a, (const void *)(uintptr_t)c, rows, cols, (double *)(uintptr_t)out);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"sums", sums, METH_VARARGS, "Per-channel |a|^2, <a, c - a>, |c - a|^2 of a block pair, added into fp64."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_fused", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&MODULE); }
