/*
 * One full pass of the binary logistic loss (dense or CSR rows), fused: for each row, the
 * score, the loss, the residual and the row's share of the gradient, while the row is in L1
 * cache; and the softmax loss on a block of scores, in one loop.
 *
 * numpy cannot fuse a nonlinearity between two BLAS products: its pass reads each block of
 * rows twice (X_b w, then X_b^T r from cache) and runs the loss as a dozen vectorised calls
 * over the block's scores in between. Here each row is read once, and the loss costs one exp
 * and one log1p per row. mpi_sgd.model.fused documents the
 * contract and chooses where it applies; mpi_sgd.model.objective falls back to its blocked
 * numpy pass where it does not, or where this optional extension was not built.
 *
 * Arithmetic is float64 whatever the storage (float32 values are widened exactly); the row
 * order of the sums is fixed, so a pass is deterministic. Row sums are accumulated per chunk
 * of rows and the chunks' sums added, which bounds the rounding growth of the long sums.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CHUNK_ROWS 512

typedef struct {
    Py_buffer view;
    int held;
} buffer_arg;

static void release(buffer_arg *args, int n)
{
    for (int i = 0; i < n; i++) {
        if (args[i].held) {
            PyBuffer_Release(&args[i].view);
            args[i].held = 0;
        }
    }
}

/* A C-contiguous buffer of the expected number of dimensions; `writable` for outputs. */
static int get_buffer(PyObject *obj, buffer_arg *arg, int ndim, int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &arg->view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: a C-contiguous%s array is needed", name,
                     writable ? " writable" : "");
        return -1;
    }
    arg->held = 1;
    if (arg->view.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimension(s) expected, got %d", name, ndim,
                     arg->view.ndim);
        return -1;
    }
    return 0;
}

/* 'd' (float64) -> 8, 'f' (float32) -> 4, else 0. */
static int float_kind(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[0] == 'd' && f[1] == '\0' && v->itemsize == 8) return 8;
    if (f[0] == 'f' && f[1] == '\0' && v->itemsize == 4) return 4;
    return 0;
}

/* An integer index buffer of 4 or 8 bytes ('i', 'l', 'q' and unsigned forms): its item size. */
static int index_kind(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[1] != '\0' || strchr("iIlLqQ", f[0]) == NULL) return 0;
    return (v->itemsize == 4 || v->itemsize == 8) ? (int)v->itemsize : 0;
}

static int check_float64(const Py_buffer *v, Py_ssize_t n, const char *name)
{
    if (float_kind(v) != 8) {
        PyErr_Format(PyExc_ValueError, "%s: float64 expected", name);
        return -1;
    }
    if (n >= 0 && v->shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "%s: length %zd expected, got %zd", name, n, v->shape[0]);
        return -1;
    }
    return 0;
}

/* Whether two float64 vectors of n entries share memory (g is written while w is read). */
static int overlap(const double *a, const double *b, Py_ssize_t n)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b, len = (uintptr_t)n * sizeof(double);
    return a && b && n > 0 && pa < pb + len && pb < pa + len;
}

/* The loss of one row and its residual; *curv (when not NULL) gets sigma (1 - sigma). */
static inline double logistic_row(double z, double y, double *r, double *curv)
{
    double a = fabs(z), e = exp(-a), q = 1.0 + e;
    double s = (z >= 0.0 ? 1.0 : e) / q; /* sigma(z) without cancellation */
    *r = s - y;
    if (curv) *curv = e / (q * q); /* sigma(|z|) sigma(-|z|) */
    return (z > 0.0 ? z : 0.0) - y * z + log1p(e);
}

#define DENSE_PASS(T)                                                                        \
    for (Py_ssize_t c0 = 0; c0 < m; c0 += CHUNK_ROWS) {                                      \
        Py_ssize_t c1 = c0 + CHUNK_ROWS < m ? c0 + CHUNK_ROWS : m;                           \
        double part_loss = 0.0, part_r = 0.0;                                                \
        for (Py_ssize_t i = c0; i < c1; i++) {                                               \
            const T *x = (const T *)X + (size_t)i * (size_t)d;                               \
            double z = 0.0, r;                                                               \
            _Pragma("omp simd reduction(+:z)")                                               \
            for (Py_ssize_t j = 0; j < d; j++) z += (double)x[j] * w[j];                     \
            part_loss += logistic_row(z + b, y[i], &r, curv ? curv + i : NULL);              \
            part_r += r;                                                                     \
            if (g) {                                                                         \
                _Pragma("omp simd")                                                          \
                for (Py_ssize_t j = 0; j < d; j++) g[j] += r * (double)x[j];                 \
            }                                                                                \
        }                                                                                    \
        loss += part_loss;                                                                   \
        rsum += part_r;                                                                      \
    }

static PyObject *logistic_dense(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oX, *oy, *ow, *og, *ocurv;
    double b;
    buffer_arg buf[5];
    memset(buf, 0, sizeof buf);
    if (!PyArg_ParseTuple(args, "OOOdOO", &oX, &oy, &ow, &b, &og, &ocurv)) return NULL;
    if (get_buffer(oX, &buf[0], 2, 0, "X") < 0) goto fail;
    Py_ssize_t m = buf[0].view.shape[0], d = buf[0].view.shape[1];
    int kind = float_kind(&buf[0].view);
    if (!kind) {
        PyErr_SetString(PyExc_ValueError, "X: float64 or float32 expected");
        goto fail;
    }
    if (get_buffer(oy, &buf[1], 1, 0, "y") < 0 || check_float64(&buf[1].view, m, "y") < 0)
        goto fail;
    if (get_buffer(ow, &buf[2], 1, 0, "w") < 0 || check_float64(&buf[2].view, d, "w") < 0)
        goto fail;
    if (og != Py_None &&
        (get_buffer(og, &buf[3], 1, 1, "g") < 0 || check_float64(&buf[3].view, d, "g") < 0))
        goto fail;
    double *curv = NULL;
    if (ocurv != Py_None) {
        if (get_buffer(ocurv, &buf[4], 1, 1, "curv") < 0 ||
            check_float64(&buf[4].view, m, "curv") < 0)
            goto fail;
        curv = (double *)buf[4].view.buf;
    }
    const void *X = buf[0].view.buf;
    const double *y = buf[1].view.buf, *w = buf[2].view.buf;
    double *g = buf[3].held ? buf[3].view.buf : NULL;
    if (overlap(g, w, d)) {
        PyErr_SetString(PyExc_ValueError, "g must not overlap w");
        goto fail;
    }
    double loss = 0.0, rsum = 0.0;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 8) {
        DENSE_PASS(double)
    } else {
        DENSE_PASS(float)
    }
    Py_END_ALLOW_THREADS
    release(buf, 5);
    return Py_BuildValue("dd", loss, rsum);
fail:
    release(buf, 5);
    return NULL;
}

/* Row by row, as the dense pass. With a `work` buffer, w and g are interleaved in it (w_j at
 * 2j, g_j at 2j + 1: WP = wg, WS = 2, GP = wg + 1, GS = 2): a feature's coefficient and
 * gradient then share a cache line, and the gathers of a row's coefficients bring in the lines
 * its scatters write; separate w and g arrays ran 1.4x slower at 2^18 features (they compete
 * for the same cache). Without one (few stored entries against many features, where copying
 * w in and g out would cost more than the pass) they are read and written in place. */
#define CSR_PASS(T, I, WP, WS, GP, GS)                                                       \
    for (Py_ssize_t c0 = 0; c0 < m; c0 += CHUNK_ROWS) {                                      \
        Py_ssize_t c1 = c0 + CHUNK_ROWS < m ? c0 + CHUNK_ROWS : m;                           \
        double part_loss = 0.0, part_r = 0.0;                                                \
        const I *p = (const I *)indptr, *col = (const I *)indices;                           \
        const T *v = (const T *)data;                                                        \
        for (Py_ssize_t i = c0; i < c1; i++) {                                               \
            Py_ssize_t lo = (Py_ssize_t)p[i], hi = (Py_ssize_t)p[i + 1];                     \
            double z = 0.0, r;                                                               \
            for (Py_ssize_t k = lo; k < hi; k++)                                             \
                z += (double)v[k] * WP[WS * (Py_ssize_t)col[k]];                             \
            part_loss += logistic_row(z + b, y[i], &r, curv ? curv + i : NULL);              \
            part_r += r;                                                                     \
            if (g)                                                                           \
                for (Py_ssize_t k = lo; k < hi; k++)                                         \
                    GP[GS * (Py_ssize_t)col[k]] += r * (double)v[k];                         \
        }                                                                                    \
        loss += part_loss;                                                                   \
        rsum += part_r;                                                                      \
    }

/* CSR_PASS for the value type (`kind`: 8 or 4 bytes) and index type (`ikind`) at hand. */
#define CSR_DISPATCH(WP, WS, GP, GS)                                                         \
    if (ikind == 4 && kind == 8) {                                                           \
        CSR_PASS(double, int, WP, WS, GP, GS)                                                \
    } else if (ikind == 4) {                                                                 \
        CSR_PASS(float, int, WP, WS, GP, GS)                                                 \
    } else if (kind == 8) {                                                                  \
        CSR_PASS(double, long long, WP, WS, GP, GS)                                          \
    } else {                                                                                 \
        CSR_PASS(float, long long, WP, WS, GP, GS)                                           \
    }

/* Whether indptr runs from >= 0 to <= nnz without decreasing: O(rows). The indices are the
 * caller's to check, once per matrix (mpi_sgd.model.fused.LogisticPass does, with numpy's
 * vectorised min and max): checking them here on every pass cost 20% of the pass. */
#define CSR_VALID(I)                                                                         \
    do {                                                                                     \
        const I *p = (const I *)indptr;                                                      \
        int down = (long long)p[0] < 0 || (long long)p[m] > (long long)nnz;                  \
        for (Py_ssize_t i = 0; i < m; i++) down |= p[i + 1] < p[i];                          \
        valid = !down;                                                                       \
    } while (0)

static PyObject *logistic_csr(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *odata, *oind, *optr, *oy, *ow, *og, *owork, *ocurv;
    double b;
    buffer_arg buf[8];
    memset(buf, 0, sizeof buf);
    if (!PyArg_ParseTuple(args, "OOOOOdOOO", &odata, &oind, &optr, &oy, &ow, &b, &og, &owork,
                          &ocurv))
        return NULL;
    if (get_buffer(odata, &buf[0], 1, 0, "data") < 0) goto fail;
    int kind = float_kind(&buf[0].view);
    if (!kind) {
        PyErr_SetString(PyExc_ValueError, "data: float64 or float32 expected");
        goto fail;
    }
    if (get_buffer(oind, &buf[1], 1, 0, "indices") < 0) goto fail;
    if (get_buffer(optr, &buf[2], 1, 0, "indptr") < 0) goto fail;
    int ikind = index_kind(&buf[1].view);
    if (!ikind || index_kind(&buf[2].view) != ikind) {
        PyErr_SetString(PyExc_ValueError, "indices, indptr: the same 4- or 8-byte integers");
        goto fail;
    }
    Py_ssize_t nnz = buf[0].view.shape[0], m = buf[2].view.shape[0] - 1;
    if (m < 0 || buf[1].view.shape[0] != nnz) {
        PyErr_SetString(PyExc_ValueError, "indptr, indices: inconsistent with data");
        goto fail;
    }
    if (get_buffer(oy, &buf[3], 1, 0, "y") < 0 || check_float64(&buf[3].view, m, "y") < 0)
        goto fail;
    if (get_buffer(ow, &buf[4], 1, 0, "w") < 0 || check_float64(&buf[4].view, -1, "w") < 0)
        goto fail;
    Py_ssize_t d = buf[4].view.shape[0];
    if (og != Py_None &&
        (get_buffer(og, &buf[5], 1, 1, "g") < 0 || check_float64(&buf[5].view, d, "g") < 0))
        goto fail;
    if (owork != Py_None && (get_buffer(owork, &buf[6], 1, 1, "work") < 0 ||
                             check_float64(&buf[6].view, 2 * d, "work") < 0))
        goto fail;
    double *curv = NULL;
    if (ocurv != Py_None) {
        if (get_buffer(ocurv, &buf[7], 1, 1, "curv") < 0 ||
            check_float64(&buf[7].view, m, "curv") < 0)
            goto fail;
        curv = (double *)buf[7].view.buf;
    }
    const void *data = buf[0].view.buf, *indices = buf[1].view.buf, *indptr = buf[2].view.buf;
    const double *y = buf[3].view.buf, *w = buf[4].view.buf;
    double *g = buf[5].held ? buf[5].view.buf : NULL, *wg = buf[6].held ? buf[6].view.buf : NULL;
    if (overlap(g, w, d) || overlap(wg, w, d) || overlap(wg, g, d) ||
        overlap(wg + d, w, d) || overlap(wg + d, g, d)) {
        PyErr_SetString(PyExc_ValueError, "g, w and work must not overlap");
        goto fail;
    }
    double loss = 0.0, rsum = 0.0;
    int valid = 0;
    Py_BEGIN_ALLOW_THREADS
    if (ikind == 4) {
        CSR_VALID(int);
    } else {
        CSR_VALID(long long);
    }
    if (valid && wg) {
        for (Py_ssize_t j = 0; j < d; j++) {
            wg[2 * j] = w[j];
            wg[2 * j + 1] = 0.0;
        }
        double *wgg = wg + 1;
        CSR_DISPATCH(wg, 2, wgg, 2)
        if (g)
            for (Py_ssize_t j = 0; j < d; j++) g[j] += wg[2 * j + 1];
    } else if (valid) {
        CSR_DISPATCH(w, 1, g, 1)
    }
    Py_END_ALLOW_THREADS
    if (!valid) {
        PyErr_SetString(PyExc_ValueError, "a malformed CSR matrix (indptr)");
        goto fail;
    }
    release(buf, 8);
    return Py_BuildValue("dd", loss, rsum);
fail:
    release(buf, 8);
    return NULL;
}

/* exp(x) for x <= 0 (softmax's max-shifted scores), within 2 ulps, branch-free so that the
 * compiler vectorises the loops calling it: glibc's and numpy's float64 exp are scalar on
 * CPUs without AVX-512 (~6-10 ns each, measured), and softmax takes K of them per row.
 * Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then exp(r) by its Taylor polynomial of
 * degree 13 (truncation below 1e-17 relative; within 2 ulps of numpy's exp over [-745, 0],
 * measured), then 2^n built in two halves from the
 * exponent bits, so that results down to the subnormals (x >= -745) need no branch; below
 * that, 0. NaN propagates. tests/unit/test_fused.py checks it against numpy's exp. */
static inline double exp_neg(double x)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    x = x < -746.0 ? -746.0 : x;
    double n = (x * 1.4426950408889634 + shifter) - shifter;
    double r = (x - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
    /* Estrin's scheme: the same polynomial with a dependency chain of 8 operations where
     * Horner's has 28 (the loop is latency-bound otherwise: measured 1.7x slower) */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double a0 = 1.0 + r, a1 = 0.5 + r * (1.0 / 6.0), a2 = 1.0 / 24.0 + r * (1.0 / 120.0);
    double a3 = 1.0 / 720.0 + r * (1.0 / 5040.0), a4 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    double a5 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    double a6 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
    double c0 = a0 + a1 * r2, c1 = a2 + a3 * r2, c2 = a4 + a5 * r2;
    double q = (c0 + c1 * r4) + (c2 + a6 * r4) * r8;
    /* 2^n = 2^h * 2^(n - h), h = round(n / 2): both halves >= -538, normal numbers */
    double h = (n * 0.5 + shifter) - shifter;
    double big = 4503599627371519.0; /* 2^52 + 1023: its low bits become the biased exponent */
    double e1 = h + big, e2 = (n - h) + big;
    uint64_t b1, b2;
    memcpy(&b1, &e1, sizeof b1);
    memcpy(&b2, &e2, sizeof b2);
    b1 = (b1 - 0x4330000000000000ULL) << 52;
    b2 = (b2 - 0x4330000000000000ULL) << 52;
    double s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return q * s1 * s2;
}

/* The softmax loss on a block of scores already computed (by BLAS: K dot products per row are
 * compute-bound, where BLAS's register blocking beats anything row by row): per row, the
 * max-shifted exponentials, log(sum) - (z_y - max) and dS = p - onehot(y), in one loop where
 * numpy makes a dozen calls over the block. S and dS are (m, K) with any strides (the passes'
 * are Fortran-ordered) and may be the same array. Optionally the intercepts b are added to the
 * scores on the way in and the residuals' column sums accumulated into gb on the way out (the
 * full pass's intercept terms, two numpy calls per block fewer). */
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || \
     (defined(__clang__) && __clang_major__ >= 14))
/* One copy for AVX2 + FMA CPUs, chosen at load time (ifunc), one for the x86-64 baseline:
 * the exponentials' loop then runs 4 doubles wide with fused multiply-adds. */
#define VECTOR_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static PyObject *softmax_loss(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oS, *oy, *odS, *ob = Py_None, *ogb = Py_None;
    int with_loss;
    buffer_arg buf[5];
    memset(buf, 0, sizeof buf);
    if (!PyArg_ParseTuple(args, "OOOp|OO", &oS, &oy, &odS, &with_loss, &ob, &ogb)) return NULL;
    if (PyObject_GetBuffer(oS, &buf[0].view, PyBUF_STRIDES | PyBUF_FORMAT) < 0) goto fail;
    buf[0].held = 1;
    if (PyObject_GetBuffer(odS, &buf[2].view, PyBUF_STRIDES | PyBUF_FORMAT | PyBUF_WRITABLE) <
        0)
        goto fail;
    buf[2].held = 1;
    if (buf[0].view.ndim != 2 || float_kind(&buf[0].view) != 8 || buf[2].view.ndim != 2 ||
        float_kind(&buf[2].view) != 8 || buf[0].view.shape[0] != buf[2].view.shape[0] ||
        buf[0].view.shape[1] != buf[2].view.shape[1]) {
        PyErr_SetString(PyExc_ValueError, "scores, dscores: float64 arrays of one (m, K) shape");
        goto fail;
    }
    Py_ssize_t m = buf[0].view.shape[0], K = buf[0].view.shape[1];
    if (get_buffer(oy, &buf[1], 1, 0, "y") < 0) goto fail;
    if (index_kind(&buf[1].view) != 8 || buf[1].view.shape[0] != m) {
        PyErr_Format(PyExc_ValueError, "y: %zd int64 class indices expected", m);
        goto fail;
    }
    const long long *y = buf[1].view.buf;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (y[i] < 0 || y[i] >= K) {
            PyErr_Format(PyExc_ValueError, "y[%zd] = %lld: not a class index in [0, %zd)", i,
                         y[i], K);
            goto fail;
        }
    }
    const double *b = NULL;
    double *gb = NULL;
    if (ob != Py_None) {
        if (get_buffer(ob, &buf[3], 1, 0, "b") < 0 || check_float64(&buf[3].view, K, "b") < 0)
            goto fail;
        b = buf[3].view.buf;
    }
    if (ogb != Py_None) {
        if (get_buffer(ogb, &buf[4], 1, 1, "gb") < 0 ||
            check_float64(&buf[4].view, K, "gb") < 0)
            goto fail;
        gb = buf[4].view.buf;
    }
    const char *S = buf[0].view.buf;
    char *dS = buf[2].view.buf;
    Py_ssize_t si = buf[0].view.strides[0], sk = buf[0].view.strides[1];
    Py_ssize_t di = buf[2].view.strides[0], dk = buf[2].view.strides[1];
    double *p = PyMem_RawMalloc(sizeof(double) * (size_t)(K > 0 ? K : 1));
    if (!p) {
        PyErr_NoMemory();
        goto fail;
    }
    double loss = 0.0;
    Py_BEGIN_ALLOW_THREADS
    if (si == (Py_ssize_t)sizeof(double) && di == (Py_ssize_t)sizeof(double)) {
        /* rows contiguous (the passes' Fortran-ordered scores): column by column over a chunk
         * of rows, loops the compiler vectorises */
        double top[CHUNK_ROWS], sum[CHUNK_ROWS], picked[CHUNK_ROWS];
        /* each sum is in [1, K]: products of `group` of them stay below 2^1000 */
        Py_ssize_t group = (Py_ssize_t)(1000.0 / log2((double)K + 1.0));
        group = group < 1 ? 1 : (group > CHUNK_ROWS ? CHUNK_ROWS : group);
        for (Py_ssize_t c0 = 0; c0 < m; c0 += CHUNK_ROWS) {
            Py_ssize_t n = c0 + CHUNK_ROWS < m ? CHUNK_ROWS : m - c0;
            const long long *yc = y + c0;
            const double *s0 = (const double *)(S + c0 * si);
            double b0 = b ? b[0] : 0.0;
            for (Py_ssize_t i = 0; i < n; i++) top[i] = s0[i] + b0;
            for (Py_ssize_t k = 1; k < K; k++) {
                const double *sc = (const double *)((const char *)s0 + k * sk);
                double bk = b ? b[k] : 0.0;
                for (Py_ssize_t i = 0; i < n; i++) {
                    double z = sc[i] + bk;
                    top[i] = z > top[i] ? z : top[i];
                }
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                double z = *(const double *)((const char *)s0 + yc[i] * sk + i * si);
                picked[i] = (z + (b ? b[yc[i]] : 0.0)) - top[i];
                sum[i] = 0.0;
            }
            for (Py_ssize_t k = 0; k < K; k++) {
                const double *sc = (const double *)((const char *)s0 + k * sk);
                double *dc = (double *)(dS + c0 * di + k * dk), bk = b ? b[k] : 0.0;
                for (Py_ssize_t i = 0; i < n; i++) {
                    double e = exp_neg((sc[i] + bk) - top[i]);
                    dc[i] = e;
                    sum[i] += e;
                }
            }
            if (with_loss) { /* the logarithms as those of products of `group` sums */
                double part = 0.0;
                for (Py_ssize_t i0 = 0; i0 < n; i0 += group) {
                    Py_ssize_t i1 = i0 + group < n ? i0 + group : n;
                    double prod = 1.0;
                    for (Py_ssize_t i = i0; i < i1; i++) {
                        prod *= sum[i];
                        part -= picked[i];
                    }
                    part += log(prod);
                }
                loss += part;
            }
            for (Py_ssize_t i = 0; i < n; i++) sum[i] = 1.0 / sum[i];
            for (Py_ssize_t k = 0; k < K; k++) {
                double *dc = (double *)(dS + c0 * di + k * dk);
                for (Py_ssize_t i = 0; i < n; i++) dc[i] *= sum[i];
            }
            for (Py_ssize_t i = 0; i < n; i++)
                *(double *)(dS + (c0 + i) * di + yc[i] * dk) -= 1.0;
            for (Py_ssize_t k = 0; gb && k < K; k++) {
                const double *dc = (const double *)(dS + c0 * di + k * dk);
                double acc = 0.0;
                for (Py_ssize_t i = 0; i < n; i++) acc += dc[i];
                gb[k] += acc;
            }
        }
    } else {
        for (Py_ssize_t c0 = 0; c0 < m; c0 += CHUNK_ROWS) {
            Py_ssize_t c1 = c0 + CHUNK_ROWS < m ? c0 + CHUNK_ROWS : m;
            double part = 0.0;
            for (Py_ssize_t i = c0; i < c1; i++) {
                const char *row = S + i * si;
                char *out = dS + i * di;
                double top = -HUGE_VAL, sum = 0.0;
                for (Py_ssize_t k = 0; k < K; k++) {
                    p[k] = *(const double *)(row + k * sk) + (b ? b[k] : 0.0);
                    top = p[k] > top ? p[k] : top;
                }
                double picked = p[y[i]] - top;
                for (Py_ssize_t k = 0; k < K; k++) {
                    p[k] = exp_neg(p[k] - top);
                    sum += p[k];
                }
                if (with_loss) part += log(sum) - picked;
                for (Py_ssize_t k = 0; k < K; k++) *(double *)(out + k * dk) = p[k] / sum;
                *(double *)(out + y[i] * dk) -= 1.0;
                for (Py_ssize_t k = 0; gb && k < K; k++) gb[k] += *(double *)(out + k * dk);
            }
            loss += part;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(p);
    release(buf, 5);
    return PyFloat_FromDouble(with_loss ? loss : NAN);
fail:
    release(buf, 5);
    return NULL;
}

/* exp_neg over a float64 array, in place: for the tests of its accuracy. */
static PyObject *exp_neg_inplace(PyObject *self, PyObject *arg)
{
    (void)self;
    buffer_arg buf[1];
    memset(buf, 0, sizeof buf);
    if (get_buffer(arg, &buf[0], 1, 1, "x") < 0 || check_float64(&buf[0].view, -1, "x") < 0) {
        release(buf, 1);
        return NULL;
    }
    double *x = buf[0].view.buf;
    for (Py_ssize_t i = 0; i < buf[0].view.shape[0]; i++) x[i] = exp_neg(x[i]);
    release(buf, 1);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"logistic_dense", logistic_dense, METH_VARARGS,
     "logistic_dense(X, y, w, b, g, curv) -> (loss_sum, residual_sum); g += X^T r (g None: "
     "the curvature alone, from the same scores)."},
    {"logistic_csr", logistic_csr, METH_VARARGS,
     "logistic_csr(data, indices, indptr, y, w, b, g, work, curv) -> (loss_sum, residual_sum); "
     "work: None or 2 len(w) float64 (w and g interleaved); "
     "every index must be in [0, len(w)): the caller checks."},
    {"softmax_loss", softmax_loss, METH_VARARGS,
     "softmax_loss(S, y, dS, with_loss, b=None, gb=None) -> loss_sum; dS = softmax(S + b) - "
     "onehot(y), gb += column sums of dS; rows of any strides (dS may be S)."},
    {"exp_neg", exp_neg_inplace, METH_O, "exp_neg(x): x <- exp(x) in place, for x <= 0."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mpi_sgd.model._fused",
    "Fused one-pass kernels of the logistic and softmax losses (see mpi_sgd.model.fused).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }
