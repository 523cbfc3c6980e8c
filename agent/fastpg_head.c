/* A spool frame's head read for the file target's lines (agent/spool_frames.py, FrameHead with lines=True):
   what the lines and the latencies need, with no Python object per event. The head is the JSON
   `[format, types, type_of_each, ids, id_offsets, subjects, positions, commit_ts, body_lengths]` that
   orjson.dumps wrote (spool_frames.pack); orjson.loads of it made ~6 objects per event (two of them strings
   the file target never reads), and freeing them a batch later cost as much again.

   Strict on purpose: only what orjson.dumps writes for the usual events is taken (no whitespace, ids and
   texts of printable ASCII, the short escapes only, integers without a fraction); anything else answers
   None and the caller decodes the head with orjson as before, so this never accepts a head orjson would
   refuse, nor reads one differently (tests/test_frame_head.py holds the two to the same values). */

#include "fastpg.h"

typedef struct {
    const char *p, *end;
} Cur;

/* One index record per event: where its body lies in the frame's payload, its id's offset in the body
   (-1: not in it) and where the id's characters lie in the head's JSON. */
typedef struct {
    int64_t start, end, off, id_at, id_len;
} LineRec;

static int eat(Cur *c, char ch)
{
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether [p, q) holds a byte that is not printable ASCII, or a backslash: 8 bytes at a time (a byte loop
   was most of the scan; bytes < 0x20, >= 0x80, 0x7f and 0x5c are flagged in each word's high bits). */
static int odd_bytes(const char *p, const char *q)
{
    uint64_t bad = 0;
    for (; q - p >= 8; p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t del = w ^ (0x7f * ONES), bs = w ^ (0x5c * ONES);
        bad |= ((w - 0x20 * ONES) & ~w) | w | ((del - ONES) & ~del) | ((bs - ONES) & ~bs);
    }
    unsigned char odd = 0;
    for (; p < q; p++) {
        unsigned char ch = (unsigned char)*p;
        odd |= (unsigned char)((unsigned char)(ch - 0x20) > 0x5e) | (unsigned char)(ch == '\\');
    }
    return (bad & HIGHS) != 0 || odd;
}

/* A JSON string of printable ASCII, the short escapes allowed unless `plain`; sets [*s, *e) to its
   characters. 0 when it is not one. */
static int string(Cur *c, int plain, const char **s, const char **e)
{
    if (!eat(c, '"'))
        return 0;
    const char *p = c->p;
    *s = p;
    const char *q = memchr(p, '"', (size_t)(c->end - p));
    if (q != NULL) {          /* the usual text: no escape, so the first quote ends it; checked in one pass */
        if (!odd_bytes(p, q)) {
            *e = q;
            c->p = q + 1;
            return 1;
        }
    }
    while (p < c->end) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            *e = p;
            c->p = p + 1;
            return 1;
        }
        if (ch < 0x20 || ch > 0x7e)
            return 0;
        if (ch == '\\') {
            if (plain || p + 1 >= c->end || !strchr("\"\\/bfnrt", p[1]) || p[1] == 0)
                return 0;          /* \u escapes (control characters, surrogates) are left to orjson */
            p += 2;
            continue;
        }
        p++;
    }
    return 0;
}

/* A JSON integer (no fraction, no exponent) of at most 18 digits. */
static int integer(Cur *c, int64_t *out)
{
    const char *p = c->p;
    int neg = p < c->end && *p == '-';
    p += neg;
    const char *d = p;
    int64_t v = 0;
    while (p < c->end && *p >= '0' && *p <= '9' && p - d < 19)
        v = v * 10 + (*p++ - '0');
    Py_ssize_t nd = p - d;
    if (nd == 0 || nd > 18 || (nd > 1 && *d == '0'))
        return 0;
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
        return 0;
    c->p = p;
    *out = neg ? -v : v;
    return 1;
}

static const double P10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number, as a double, correctly rounded as orjson's (and Python's float()) are: when its digits
   make an integer below 2**53 and its decimal exponent is within 22, one exact operand times or divided by
   another, itself exact (Clinger's fast path: one rounding; a commit time of microseconds has 16 digits,
   below 2**53 until 2255); else Python's own conversion. Integers of more than 15 digits are left to
   orjson (as a Python int, float() of it would be the same only below 2**53). */
static int number(Cur *c, double *out)
{
    const char *p = c->p, *s = p;
    int neg = p < c->end && *p == '-';
    p += neg;
    const char *d = p;
    uint64_t m = 0;
    int digits = 0, scale = 0;        /* significant digits taken into m; decimal exponent of m */
    while (p < c->end && *p >= '0' && *p <= '9') {
        if (m || *p != '0')
            digits++;
        m = digits <= 19 ? m * 10 + (uint64_t)(*p - '0') : m;
        scale += digits > 19;
        p++;
    }
    Py_ssize_t nd = p - d;
    if (nd == 0 || (nd > 1 && *d == '0'))
        return 0;
    int is_int = 1;
    if (p < c->end && *p == '.') {
        const char *f = ++p;
        while (p < c->end && *p >= '0' && *p <= '9') {
            if (m || *p != '0')
                digits++;
            if (digits <= 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                scale--;
            }
            p++;
        }
        if (p == f)
            return 0;
        is_int = 0;
    }
    int x = 0, big = 0;
    if (p < c->end && (*p == 'e' || *p == 'E')) {
        p++;
        int xneg = p < c->end && *p == '-';
        if (p < c->end && (*p == '+' || *p == '-'))
            p++;
        const char *xs = p;
        while (p < c->end && *p >= '0' && *p <= '9') {
            x = x < 100000 ? x * 10 + (*p - '0') : x;
            big |= x >= 100000;
            p++;
        }
        if (p == xs)
            return 0;
        x = xneg ? -x : x;
        is_int = 0;
    }
    if ((is_int && nd > 15) || p - s > 60)
        return 0;
    int e = scale + x;
    double v;
    if (!big && digits <= 19 && m <= ((uint64_t)1 << 53) && e >= -22 && e <= 22) {
        v = e < 0 ? (double)m / P10[-e] : (double)m * P10[e];
        v = neg && !(is_int && m == 0) ? -v : v;      /* "-0" is the int 0 to orjson, -0.0 only as a float */
    } else {
        char tmp[64];
        memcpy(tmp, s, (size_t)(p - s));
        tmp[p - s] = 0;
        char *stop;
        v = PyOS_string_to_double(tmp, &stop, NULL);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (stop != tmp + (p - s))
            return 0;
    }
    if (!isfinite(v))
        return 0;
    c->p = p;
    *out = v;
    return 1;
}

/* `[` then items separated by commas, then `]`: calls item(i) for each; the count of items, -1 when the
   array is not well formed or an item refused. */
#define ARRAY(c, i, item)                                                       \
    do {                                                                        \
        if (!eat(c, '['))                                                       \
            return -1;                                                          \
        i = 0;                                                                  \
        if (!eat(c, ']')) {                                                     \
            for (;; i++) {                                                      \
                if (!(item))                                                    \
                    return -1;                                                  \
                if (eat(c, ']'))                                                \
                    break;                                                      \
                if (!eat(c, ','))                                               \
                    return -1;                                                  \
            }                                                                   \
            i++;                                                                \
        }                                                                       \
    } while (0)

static Py_ssize_t strings(Cur *c, int plain, LineRec *recs, Py_ssize_t n, const char *base)
{
    Py_ssize_t i;
    const char *s, *e;
    ARRAY(c, i, (string(c, plain, &s, &e) && (recs == NULL || i < n) &&
                 (recs == NULL || (recs[i].id_at = s - base, recs[i].id_len = e - s, 1))));
    return i;
}

static Py_ssize_t ints(Cur *c, int64_t *out, Py_ssize_t n)
{
    Py_ssize_t i;
    int64_t v;
    ARRAY(c, i, (integer(c, &v) && (out == NULL || (i < n && (out[i] = v, 1)))));
    return i;
}

/* The events of a transaction share their commit time: a number spelled as the one before it (up to the
   next comma or bracket) is that one's value, not parsed again. */
static int number_again(Cur *c, double *out, const char **prev, Py_ssize_t *plen, double *pv)
{
    Py_ssize_t k = *plen;
    if (k > 0 && c->end - c->p > k && (c->p[k] == ',' || c->p[k] == ']') && memcmp(c->p, *prev, (size_t)k) == 0) {
        c->p += k;
        *out = *pv;
        return 1;
    }
    const char *s = c->p;
    if (!number(c, out))
        return 0;
    *prev = s;
    *plen = c->p - s;
    *pv = *out;
    return 1;
}

static Py_ssize_t numbers(Cur *c, double *out, Py_ssize_t n)
{
    Py_ssize_t i, plen = 0;
    const char *prev = NULL;
    double v, pv = 0.0;
    ARRAY(c, i, (number_again(c, &v, &prev, &plen, &pv) && i < n && (out[i] = v, 1)));
    return i;
}

/* head_index(head, n) -> (end, index, ts, size) | None. `head`: the head's JSON; `n`: the events the
   frame's row says it holds. `end`: where its third item ends (head[:end] + b"]" is the format, the
   types and the type of each, for orjson); `index`: n LineRecs with the bodies' places as the body
   lengths give them; `ts`: the n commit times as doubles; `size`: the bodies' bytes in all. None when
   the head is not of the usual kinds, or its lists do not hold n events each. */
PyObject *fp_head_index(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "head_index(head: bytes, n: int)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0 || n > 1 << 24)
        Py_RETURN_NONE;
    const char *base = PyBytes_AS_STRING(args[0]);
    Cur c = {base, base + PyBytes_GET_SIZE(args[0])}, *cp = &c;
    PyObject *index = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(LineRec) * n);
    PyObject *ts = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(double) * n);
    int64_t *tmp = PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (index == NULL || ts == NULL || tmp == NULL) {
        Py_XDECREF(index);
        Py_XDECREF(ts);
        PyMem_Free(tmp);
        return tmp == NULL ? PyErr_NoMemory() : NULL;
    }
    LineRec *recs = (LineRec *)PyBytes_AS_STRING(index);
    double *tsv = (double *)PyBytes_AS_STRING(ts);
    PyObject *out = NULL;
    int64_t fmt, one, size = 0;
    Py_ssize_t end = 0;
    /* [format, types, type_of_each, */
    if (!eat(cp, '[') || !integer(cp, &fmt) || !eat(cp, ',') || strings(cp, 0, NULL, 0, base) < 0 ||
        !eat(cp, ','))
        goto done;
    if (c.p < c.end && *c.p == '[') {
        if (ints(cp, NULL, 0) < 0)
            goto done;
    } else if (!integer(cp, &one))
        goto done;
    end = c.p - base;
    /* ids, id_offsets, subjects, positions, commit_ts, body_lengths] */
    if (!eat(cp, ',') || strings(cp, 1, recs, n, base) != n || !eat(cp, ',') || ints(cp, tmp, n) != n)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        recs[i].off = tmp[i];
    if (!eat(cp, ',') || strings(cp, 0, NULL, 0, base) != n || !eat(cp, ',') ||
        strings(cp, 0, NULL, 0, base) != n || !eat(cp, ',') || numbers(cp, tsv, n) != n || !eat(cp, ',') ||
        ints(cp, tmp, n) != n || !eat(cp, ']') || c.p != c.end)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t len = tmp[i], off = recs[i].off;
        if (len < 0 || len > ((int64_t)1 << 32) || off < -1 || off > len || (off >= 0 && recs[i].id_len == 0))
            goto done;        /* (pack never cuts an empty id: its offset is -1) */
        recs[i].start = size;
        size += len;
        recs[i].end = size;
    }
    out = Py_BuildValue("(nOOL)", end, index, ts, (long long)size);
done:
    Py_DECREF(index);
    Py_DECREF(ts);
    PyMem_Free(tmp);
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* The bytes the lines of an indexed run (payload, head, index, lo, hi) take, checked; -1 when it is not one.
   With w, writes them there. */
Py_ssize_t fp_indexed_lines(PyObject *run, char *w, char **endp)
{
    PyObject *payload = PyTuple_GET_ITEM(run, 0), *head = PyTuple_GET_ITEM(run, 1),
             *index = PyTuple_GET_ITEM(run, 2);
    if (!PyBytes_CheckExact(payload) || !PyBytes_CheckExact(head) || !PyBytes_CheckExact(index) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(run, 3)) || !PyLong_CheckExact(PyTuple_GET_ITEM(run, 4)))
        return -1;
    Py_ssize_t lo = PyLong_AsSsize_t(PyTuple_GET_ITEM(run, 3)), hi = PyLong_AsSsize_t(PyTuple_GET_ITEM(run, 4));
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t nrec = PyBytes_GET_SIZE(index) / (Py_ssize_t)sizeof(LineRec);
    if (lo < 0 || hi < lo || hi > nrec || PyBytes_GET_SIZE(index) % (Py_ssize_t)sizeof(LineRec))
        return -1;
    const LineRec *r = (const LineRec *)PyBytes_AS_STRING(index);
    const char *p = PyBytes_AS_STRING(payload), *h = PyBytes_AS_STRING(head);
    Py_ssize_t pn = PyBytes_GET_SIZE(payload), hn = PyBytes_GET_SIZE(head), total = 0;
    for (Py_ssize_t i = lo; i < hi; i++) {
        int64_t a = r[i].start, b = r[i].end, off = r[i].off, ida = r[i].id_at, idn = off >= 0 ? r[i].id_len : 0;
        if (w == NULL) {
            if (a < 0 || b < a || b > pn || off < -1 || off > b - a || ida < 0 || idn < 0 || ida + idn > hn)
                return -1;
            total += (Py_ssize_t)(b - a + idn + 1);
            continue;
        }
        w = fp_put_line(w, p + a, (Py_ssize_t)(b - a), (Py_ssize_t)off, h + ida, (Py_ssize_t)idn);
    }
    if (endp != NULL)
        *endp = w;
    return total;
}

/* head_latencies(ts, now, lo, hi) -> [now - t for t in the commit times lo .. hi - 1 of head_index's ts] */
PyObject *fp_head_latencies(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_CheckExact(args[0]) || !PyFloat_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "head_latencies(ts: bytes, now: float, lo: int, hi: int)");
        return NULL;
    }
    Py_ssize_t lo = PyLong_AsSsize_t(args[2]), hi = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]) / (Py_ssize_t)sizeof(double);
    if (lo < 0 || hi < lo || hi > n) {
        PyErr_SetString(PyExc_IndexError, "head_latencies: lo .. hi outside the frame");
        return NULL;
    }
    const double *t = (const double *)PyBytes_AS_STRING(args[0]);
    double now = PyFloat_AS_DOUBLE(args[1]);
    PyObject *out = PyList_New(hi - lo);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = lo; i < hi; i++) {
        PyObject *v = PyFloat_FromDouble(now - t[i]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i - lo, v);
    }
    return out;
}
