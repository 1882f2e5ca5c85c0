/* Compiled helpers for the two hot loops of `neurorecon check` on large neurons.
 *
 * parse_table: the numbers of a well-formed SWC file (whitespace-separated, '#' comments, the same
 * number of columns on every line) as float64, three times faster than numpy.loadtxt. Anything
 * else returns None and the Python reader takes over (it names the offending line).
 *
 * cross_pairs / close_pairs: all pairs of points within r on a uniform grid, the search that the
 * close-pair checks (back_tracking, loop, duplicate points) spend most of their time in.
 *
 * Only the CPython C API is used (buffers in, bytearrays out; numpy wraps them without a copy in
 * Python), so the module builds with any C compiler and Python's headers, and neurorecon works
 * without it (setup.py marks it optional; neurorecon.morphology.spatial and neurorecon.io.swc fall
 * back to numpy). Distances are computed as numpy's norm does, ((dx*dx + dy*dy) + dz*dz) then
 * sqrt, and the build turns off fused multiply-adds, so both paths find the same pairs with the
 * same distances.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------ growable buffers */
typedef struct {
    char *data;
    Py_ssize_t len, cap;  /* in bytes */
} Buf;

static int buf_push(Buf *b, const void *item, Py_ssize_t size) {
    if (b->len + size > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->len + size) cap *= 2;
        char *t = (char *)realloc(b->data, cap);
        if (!t) return 0;
        b->data = t;
        b->cap = cap;
    }
    memcpy(b->data + b->len, item, size);
    b->len += size;
    return 1;
}

/* A bytearray, so that numpy's frombuffer over it gives a writable array without a copy. */
static PyObject *buf_bytes(Buf *b) {
    PyObject *o = PyByteArray_FromStringAndSize(b->data ? b->data : "", b->len);
    free(b->data);
    b->data = NULL;
    return o;
}

/* ------------------------------------------------------------------------------------ SWC table */
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f'; }

/* Characters of a plain decimal number. Anything else (hex, nan, inf, a comma) is left to the
 * Python reader, which accepts or names it the way numpy.loadtxt and float() do. */
static int is_num(char c) { return (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E'; }

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The k characters at s as a decimal number, as strtod reads them; 0 if they are not one.
 * Clinger's fast path: with at most 2^53 as the digits' integer and a power of ten up to 22, one
 * IEEE multiplication or division of two exact values is the correctly rounded result, which is
 * what strtod returns. Other numbers (more digits, larger exponents) go to strtod. */
static int read_number(const char *s, Py_ssize_t k, double *out) {
    const char *p = s, *end = s + k;
    int neg = 0, digits = 0, frac = 0, exp = 0, eneg = 0, edigits = 0;
    uint64_t m = 0;
    if (p < end && (*p == '-' || *p == '+')) neg = *p++ == '-';
    for (; p < end && *p >= '0' && *p <= '9'; p++, digits++) m = m * 10 + (uint64_t)(*p - '0');
    if (p < end && *p == '.')
        for (p++; p < end && *p >= '0' && *p <= '9'; p++, digits++, frac++) m = m * 10 + (uint64_t)(*p - '0');
    if (digits == 0) return 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '-' || *p == '+')) eneg = *p++ == '-';
        for (; p < end && *p >= '0' && *p <= '9' && edigits < 6; p++, edigits++) exp = exp * 10 + (*p - '0');
        if (edigits == 0) return 0;
    }
    if (p != end) return 0;
    int e10 = (eneg ? -exp : exp) - frac;
    if (digits <= 15 && e10 >= -22 && e10 <= 22) {   /* 15 digits: m < 10^15 < 2^53 */
        double v = (double)m;
        v = e10 < 0 ? v / POW10[-e10] : v * POW10[e10];
        *out = neg ? -v : v;
        return 1;
    }
    char tok[64];
    if (k > 62) return 0;
    memcpy(tok, s, k);                       /* the input need not be NUL-terminated */
    tok[k] = 0;
    char *stop;
    *out = strtod(tok, &stop);
    return stop == tok + k;
}

static PyObject *parse_table(PyObject *self, PyObject *args) {
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in)) return NULL;
    const char *p = (const char *)in.buf, *end = p + in.len;
    Buf out = {0};
    Py_ssize_t ncol = -1;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    while (ok && p < end) {
        const char *eol = p;                 /* lines end at \n, \r or \r\n, as bytes.splitlines() */
        while (eol < end && *eol != '\n' && *eol != '\r') eol++;
        Py_ssize_t cols = 0;
        const char *q = p;
        for (;;) {
            while (q < eol && is_space(*q)) q++;
            if (q >= eol || *q == '#') break;
            Py_ssize_t k = 0;
            while (q + k < eol && is_num(q[k])) k++;
            /* a number ends at a space, a comment or the line's end */
            double v;
            if (k == 0 || (q + k < eol && !is_space(q[k]) && q[k] != '#') || !read_number(q, k, &v)) { ok = 0; break; }
            if (!buf_push(&out, &v, sizeof v)) { ok = 0; break; }
            cols++;
            q += k;
        }
        if (!ok) break;
        if (cols) {
            if (ncol < 0) ncol = cols;
            else if (cols != ncol) ok = 0;
        }
        p = eol + 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    if (!ok || ncol < 0) {
        free(out.data);
        Py_RETURN_NONE;
    }
    PyObject *bytes = buf_bytes(&out);
    if (!bytes) return NULL;
    return Py_BuildValue("(Nn)", bytes, ncol);
}

/* ------------------------------------------------------------------------------ close-pair search */
typedef struct {
    int64_t key;
    int64_t row;
} Cell;

static int cmp_cell(const void *a, const void *b) {
    const Cell *x = (const Cell *)a, *y = (const Cell *)b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

typedef struct {
    double lo[3], size;
    int64_t dims[3];
} Frame;

/* The grid of spatial.py's _frame: cells at least r wide, one empty cell of margin on each side. */
static void make_frame(Frame *f, const double *a, Py_ssize_t na, const double *b, Py_ssize_t nb, double r) {
    double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    const double *sets[2] = {a, b};
    Py_ssize_t ns[2] = {na, nb};
    for (int s = 0; s < 2; s++)
        for (Py_ssize_t i = 0; i < ns[s]; i++)
            for (int k = 0; k < 3; k++) {
                double v = sets[s][3 * i + k];
                if (v < lo[k]) lo[k] = v;
                if (v > hi[k]) hi[k] = v;
            }
    double extent = 0;
    for (int k = 0; k < 3; k++) extent = fmax(extent, hi[k] - lo[k]);
    f->size = fmax(fmax(r, extent / 1048576.0), 1e-12);
    for (int k = 0; k < 3; k++) {
        f->lo[k] = lo[k];
        f->dims[k] = (int64_t)floor((hi[k] - lo[k]) / f->size) + 3;
    }
}

static void cell_of(const Frame *f, const double *pt, int64_t c[3]) {
    for (int k = 0; k < 3; k++) c[k] = (int64_t)floor((pt[k] - f->lo[k]) / f->size) + 1;
}

static int64_t key_of(const Frame *f, int64_t cx, int64_t cy, int64_t cz) {
    return (cx * f->dims[1] + cy) * f->dims[2] + cz;
}

static int get_points(PyObject *obj, Py_buffer *view, Py_ssize_t *n) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return 0;
    if (!view->format || strcmp(view->format, "d") != 0 || view->len % (3 * sizeof(double)) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "points must be a C-contiguous float64 array of shape (n, 3)");
        return 0;
    }
    *n = view->len / (3 * sizeof(double));
    return 1;
}

/* Pairs (i in a, j in b) with |a_i - b_j| <= r; with `same` (a is b), each pair once with i < j. */
static PyObject *pairs(PyObject *args, int same) {
    PyObject *oa, *ob = NULL;
    double r;
    if (same ? !PyArg_ParseTuple(args, "Od", &oa, &r) : !PyArg_ParseTuple(args, "OOd", &oa, &ob, &r)) return NULL;
    Py_buffer va, vb;
    Py_ssize_t na, nb;
    if (!get_points(oa, &va, &na)) return NULL;
    if (!same && !get_points(ob, &vb, &nb)) {
        PyBuffer_Release(&va);
        return NULL;
    }
    const double *a = (const double *)va.buf, *b = same ? a : (const double *)vb.buf;
    if (same) nb = na;
    Buf oi = {0}, oj = {0}, od = {0};
    int ok = 1;
    Cell *grid = NULL, *query = NULL;
    if (na && nb && isfinite(r) && r >= 0) {
        grid = (Cell *)malloc(sizeof(Cell) * nb);
        query = same ? grid : (Cell *)malloc(sizeof(Cell) * na);
        ok = grid != NULL && query != NULL;
    }
    if (ok && grid) {
        Py_BEGIN_ALLOW_THREADS
        Frame f;
        make_frame(&f, a, na, b, nb, r);
        int64_t c[3];
        for (Py_ssize_t j = 0; j < nb; j++) {
            cell_of(&f, b + 3 * j, c);
            grid[j].key = key_of(&f, c[0], c[1], c[2]);
            grid[j].row = j;
        }
        qsort(grid, nb, sizeof(Cell), cmp_cell);
        if (!same) {
            for (Py_ssize_t i = 0; i < na; i++) {
                cell_of(&f, a + 3 * i, c);
                query[i].key = key_of(&f, c[0], c[1], c[2]);
                query[i].row = i;
            }
            qsort(query, na, sizeof(Cell), cmp_cell);
        }
        /* Queries in key order: for each of the 9 rows of cells around a query (the three cells
         * along z have consecutive keys, so a row is one key range), the range's start only moves
         * forward, so one pointer per row walks the grid once instead of a binary search each. */
        Py_ssize_t start[9] = {0};
        for (Py_ssize_t q = 0; q < na && ok; q++) {
            int64_t i = query[q].row;
            const double *pa = a + 3 * i;
            for (int o = 0; o < 9 && ok; o++) {
                int64_t k0 = query[q].key + ((o / 3 - 1) * f.dims[1] + (o % 3 - 1)) * f.dims[2] - 1;
                Py_ssize_t s = start[o];
                while (s < nb && grid[s].key < k0) s++;
                start[o] = s;
                for (; s < nb && grid[s].key <= k0 + 2; s++) {
                    int64_t j = grid[s].row;
                    if (same && j <= i) continue;
                    const double *pb = b + 3 * j;
                    double ex = pa[0] - pb[0], ey = pa[1] - pb[1], ez = pa[2] - pb[2];
                    double d = sqrt((ex * ex + ey * ey) + ez * ez);
                    if (d <= r) {
                        if (!buf_push(&oi, &i, 8) || !buf_push(&oj, &j, 8) || !buf_push(&od, &d, 8)) { ok = 0; break; }
                    }
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    free(grid);
    if (!same) free(query);
    PyBuffer_Release(&va);
    if (!same) PyBuffer_Release(&vb);
    if (!ok) {
        free(oi.data);
        free(oj.data);
        free(od.data);
        return PyErr_NoMemory();
    }
    return Py_BuildValue("(NNN)", buf_bytes(&oi), buf_bytes(&oj), buf_bytes(&od));
}

static PyObject *cross_pairs(PyObject *self, PyObject *args) { return pairs(args, 0); }
static PyObject *close_pairs(PyObject *self, PyObject *args) { return pairs(args, 1); }

static PyMethodDef methods[] = {
    {"parse_table", parse_table, METH_VARARGS,
     "parse_table(data: bytes) -> (float64 bytearray, columns) | None: the numbers of a well-formed SWC file."},
    {"cross_pairs", cross_pairs, METH_VARARGS,
     "cross_pairs(a, b, r) -> (i, j, d bytearrays): int64 rows and float64 distances of pairs within r."},
    {"close_pairs", close_pairs, METH_VARARGS,
     "close_pairs(xyz, r) -> (i, j, d bytearrays): pairs i < j within r."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Compiled helpers of neurorecon.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
