/* Compiled core of the MySQL / MariaDB source: binlog row images -> the contract's JSON-ready values.

   decode_rows(plan, plan2, buf, pos, end) does what a decoder from agent/binlog_rows.py's
   compile_rows_decoder does for one rows event: a list of row dicts (insert / delete) or of (before, after)
   dict pairs (update, when plan2 is not None). A plan (made once per table shape by plan()) says, per
   present column, its name, a kind and the kind's parameter (agent/fastmy.py assigns them from the column's
   binlog type and metadata), and the column's pure Python decoder fn(buf, pos) -> (value, pos). Kinds
   handled here are decoded here for the values a server writes; anything else -- a kind without C code,
   or a value outside the usual range -- goes through that Python decoder, so the pure path stays the
   reference for every edge case. Bytes in, values out: no I/O, no state besides what init() sets. */

#include "fastmy.h"
#include <stdio.h>

PyObject *F32Cache = NULL;
PyObject *F32Conv = NULL;
PyObject *JsonText = NULL;
PyObject *RawJsonType = NULL;

const char *PLAN_NAME = "agent._fastmy.plan";

static void plan_free(PyObject *cap) {
    Plan *pl = (Plan *)PyCapsule_GetPointer(cap, PLAN_NAME);
    if (pl == NULL) return;
    for (Py_ssize_t i = 0; i < pl->n; i++) {
        Py_XDECREF(pl->cols[i].name);
        Py_XDECREF(pl->cols[i].fn);
    }
    PyMem_Free(pl);
}

/* plan(names, kinds, args, fns): the per-image decoding plan, as a capsule. */
static PyObject *make_plan(PyObject *self, PyObject *const *a, Py_ssize_t na) {
    if (na != 4 || !PyTuple_Check(a[0]) || !PyBytes_Check(a[1]) || !PyTuple_Check(a[2]) || !PyTuple_Check(a[3])) {
        PyErr_SetString(PyExc_TypeError, "plan(names: tuple, kinds: bytes, args: tuple, fns: tuple)");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(a[0]);
    if (PyBytes_GET_SIZE(a[1]) != n || PyTuple_GET_SIZE(a[2]) != n || PyTuple_GET_SIZE(a[3]) != n) {
        PyErr_SetString(PyExc_ValueError, "plan: names, kinds, args and fns differ in length");
        return NULL;
    }
    Plan *pl = (Plan *)PyMem_Calloc(1, sizeof(Plan) + sizeof(Column) * (size_t)(n > 0 ? n : 1));
    if (pl == NULL) return PyErr_NoMemory();
    const unsigned char *kinds = (const unsigned char *)PyBytes_AS_STRING(a[1]);
    for (Py_ssize_t i = 0; i < n; i++) {
        Column *c = &pl->cols[i];
        c->kind = kinds[i] <= K_MAX ? kinds[i] : K_CALL;
        c->arg = PyLong_AsLong(PyTuple_GET_ITEM(a[2], i));
        if (c->arg == -1 && PyErr_Occurred()) {
            pl->n = i;
            PyObject *cap = PyCapsule_New(pl, PLAN_NAME, plan_free);
            Py_XDECREF(cap);
            return NULL;
        }
        c->name = PyTuple_GET_ITEM(a[0], i);
        Py_INCREF(c->name);
        c->fn = PyTuple_GET_ITEM(a[3], i);
        Py_INCREF(c->fn);
    }
    pl->n = n;
    PyObject *cap = PyCapsule_New(pl, PLAN_NAME, plan_free);
    if (cap == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) { Py_DECREF(pl->cols[i].name); Py_DECREF(pl->cols[i].fn); }
        PyMem_Free(pl);
    }
    return cap;
}

/* init(f32_cache, f32_converter, json_text, RawJson) */
static PyObject *init(PyObject *self, PyObject *const *a, Py_ssize_t na) {
    if (na != 4) {
        PyErr_SetString(PyExc_TypeError, "init(f32_cache, f32_converter, json_text, RawJson)");
        return NULL;
    }
    Py_XSETREF(F32Cache, Py_NewRef(a[0]));
    Py_XSETREF(F32Conv, Py_NewRef(a[1]));
    Py_XSETREF(JsonText, Py_NewRef(a[2]));
    Py_XSETREF(RawJsonType, Py_NewRef(a[3]));
    render_cache_clear();
    Py_RETURN_NONE;
}

/* ---- JSON text (MariaDB's JSON columns): RFC 8259 syntax, checked without building any object */

#define JSON_MAX_DEPTH 256

static Py_ssize_t json_ws(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

static int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* s[i] is the opening quote: the index after the closing one, or -1 */
static Py_ssize_t json_string(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    for (i++; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"') return i + 1;
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (++i >= n) return -1;
            c = s[i];
            if (c == 'u') {
                if (i + 4 >= n || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) || !is_hex(s[i + 3]) || !is_hex(s[i + 4]))
                    return -1;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return -1;
            }
        }
    }
    return -1;
}

static Py_ssize_t json_digits(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    Py_ssize_t j = i;
    while (j < n && s[j] >= '0' && s[j] <= '9') j++;
    return j > i ? j : -1;
}

static Py_ssize_t json_number(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') i++;
    else if ((i = json_digits(s, i, n)) < 0) return -1;
    if (i < n && s[i] == '.' && (i = json_digits(s, i + 1, n)) < 0) return -1;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if ((i = json_digits(s, i, n)) < 0) return -1;
    }
    return i;
}

/* 1: one JSON value with only whitespace around it; 0: not JSON; -1: nested deeper than this checks
   (the caller asks the Python check then) */
int json_valid(const unsigned char *s, Py_ssize_t n) {
    char stack[JSON_MAX_DEPTH];
    int depth = 0;
    Py_ssize_t i = json_ws(s, 0, n);
value:
    if (i >= n) return 0;
    switch (s[i]) {
    case '{': case '[':
        if (depth == JSON_MAX_DEPTH) return -1;
        stack[depth++] = (char)s[i];
        i = json_ws(s, i + 1, n);
        if (i < n && s[i] == (stack[depth - 1] == '{' ? '}' : ']')) { i++; depth--; goto after; }
        if (stack[depth - 1] == '{') goto key;
        goto value;
    case '"':
        if ((i = json_string(s, i, n)) < 0) return 0;
        goto after;
    case 't':
        if (n - i < 4 || memcmp(s + i, "true", 4)) return 0;
        i += 4;
        goto after;
    case 'f':
        if (n - i < 5 || memcmp(s + i, "false", 5)) return 0;
        i += 5;
        goto after;
    case 'n':
        if (n - i < 4 || memcmp(s + i, "null", 4)) return 0;
        i += 4;
        goto after;
    default:
        if ((i = json_number(s, i, n)) < 0) return 0;
        goto after;
    }
key:
    if (i >= n || s[i] != '"' || (i = json_string(s, i, n)) < 0) return 0;
    i = json_ws(s, i, n);
    if (i >= n || s[i] != ':') return 0;
    i = json_ws(s, i + 1, n);
    goto value;
after:
    i = json_ws(s, i, n);
    if (depth == 0) return i == n;
    if (i >= n) return 0;
    if (s[i] == ',') {
        i = json_ws(s, i + 1, n);
        if (stack[depth - 1] == '{') goto key;
        goto value;
    }
    if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) { i++; depth--; goto after; }
    return 0;
}

/* myvalues.json_text for UTF-8 bytes: RawJson(text) when the text is JSON on one line; anything else
   (not JSON, line breaks to fold, too deep to check here) through json_text itself */
PyObject *json_text(const unsigned char *s, Py_ssize_t n) {
    PyObject *t = PyUnicode_DecodeUTF8((const char *)s, n, "replace");
    if (t == NULL) return NULL;
    PyObject *fn = json_valid(s, n) == 1 && !memchr(s, '\n', (size_t)n) && !memchr(s, '\r', (size_t)n)
                   ? RawJsonType : JsonText;
    PyObject *v = PyObject_CallOneArg(fn, t);
    Py_DECREF(t);
    return v;
}

int short_read_error(Py_ssize_t p, Py_ssize_t need, Py_ssize_t len) {
    PyErr_Format(PyExc_IndexError, "row image needs %zd bytes at offset %zd of %zd", need, p, len);
    return 1;
}

/* the column's pure decoder: fn(buf, p) -> (value, p) */
PyObject *call_fn(Column *c, PyObject *buf, Py_ssize_t *pp) {
    PyObject *pos = PyLong_FromSsize_t(*pp);
    if (pos == NULL) return NULL;
    PyObject *args[2] = {buf, pos};
    PyObject *r = PyObject_Vectorcall(c->fn, args, 2, NULL);
    Py_DECREF(pos);
    if (r == NULL) return NULL;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "a column decoder must return (value, position)");
        return NULL;
    }
    Py_ssize_t np = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 1));
    if (np == -1 && PyErr_Occurred()) { Py_DECREF(r); return NULL; }
    PyObject *v = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    Py_DECREF(r);
    *pp = np;
    return v;
}

const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* 'YYYY-MM-DD' for days since 1970-01-01 (proleptic Gregorian, days >= 0). The last day's text is kept
   (callers hold the GIL): the timestamps of a rows event mostly fall on one day, and the divisions here
   were a tenth of a row's rendering. */
static int civil_text(long long days, char *out);
static long long civil_days = -1;
static char civil_last[24];
static int civil_len;

static int civil(long long days, char *out) {
    if (days != civil_days) {
        civil_len = civil_text(days, civil_last);
        civil_days = days;
    }
    memcpy(out, civil_last, (size_t)civil_len);
    return civil_len;
}

static int civil_text(long long days, char *out) {
    long long z = days + 719468;
    long long era = z / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    long long d = doy - (153 * mp + 2) / 5 + 1;
    long long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    int n = put_pad(out, (unsigned long long)y, 4);
    out[n] = '-';
    n += 1 + put_pad(out + n + 1, (unsigned long long)m, 2);
    out[n] = '-';
    return n + 1 + put_pad(out + n + 1, (unsigned long long)d, 2);
}

static const int DIG2BYTES[10] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};
static const unsigned long POW10[10] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000,
                                        1000000000};

int decimal_text(const unsigned char *src, Py_ssize_t p, Py_ssize_t len, int precision, int scale,
                 Py_ssize_t *size_out, char *out) {
    int intg = precision - scale;
    if (intg < 0 || scale < 0 || precision > 81) return -1;
    int intg0 = intg / 9, intg0x = intg % 9, frac0 = scale / 9, frac0x = scale % 9;
    Py_ssize_t size = DIG2BYTES[intg0x] + intg0 * 4 + frac0 * 4 + DIG2BYTES[frac0x];
    if (size == 0) return -1;
    if (p + size > len) return -1;             /* the Python decoder reports the short read its way */
    unsigned char b[48];
    if (size > (Py_ssize_t)sizeof b) return -1;
    memcpy(b, src + p, (size_t)size);
    int negative = !(b[0] & 0x80);
    b[0] ^= 0x80;
    int nonzero = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (negative) b[i] = (unsigned char)~b[i];
        if (i == 0 && negative) b[0] &= 0x7f;  /* the sign bit is not part of the value */
        nonzero |= b[i];
    }
    int o = 0;
    if (negative && nonzero) out[o++] = '-';
    Py_ssize_t q = 0;
    int started = 0;
    /* integer part: the leading partial group, then full groups of 9 digits */
    for (int g = -1; g < intg0; g++) {
        int nb = g < 0 ? DIG2BYTES[intg0x] : 4;
        int digits = g < 0 ? intg0x : 9;
        if (nb == 0) continue;
        unsigned long v = 0;
        for (int i = 0; i < nb; i++) v = v << 8 | b[q + i];
        q += nb;
        if (v >= POW10[digits]) return -1;
        if (started) o += put_pad(out + o, v, digits);
        else if (v) { o += put_uvar(out + o, v); started = 1; }
    }
    if (!started) out[o++] = '0';
    if (scale) {
        out[o++] = '.';
        for (int g = 0; g <= frac0; g++) {
            int nb = g < frac0 ? 4 : DIG2BYTES[frac0x];
            int digits = g < frac0 ? 9 : frac0x;
            if (nb == 0) continue;
            unsigned long v = 0;
            for (int i = 0; i < nb; i++) v = v << 8 | b[q + i];
            q += nb;
            if (v >= POW10[digits]) return -1;
            o += put_pad(out + o, v, digits);
        }
    }
    *size_out = size;
    return o;
}

/* DECIMAL(precision, scale) at b[p]; NULL with no error set: not in the usual form, use the Python decoder */
static PyObject *decimal(const unsigned char *src, Py_ssize_t p, Py_ssize_t len, int precision, int scale,
                         Py_ssize_t *size_out) {
    char out[128];
    int o = decimal_text(src, p, len, precision, scale, size_out, out);
    return o < 0 ? NULL : PyUnicode_FromStringAndSize(out, o);
}

const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_into(const unsigned char *s, Py_ssize_t n, char *o) {
    Py_ssize_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *o++ = B64[v >> 18]; *o++ = B64[v >> 12 & 63]; *o++ = B64[v >> 6 & 63]; *o++ = B64[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *o++ = B64[v >> 18]; *o++ = B64[v >> 12 & 63];
        *o++ = i + 1 < n ? B64[v >> 6 & 63] : '=';
        *o++ = '=';
    }
}

static PyObject *base64(const unsigned char *s, Py_ssize_t n) {
    PyObject *r = PyUnicode_New((n + 2) / 3 * 4, 127);
    if (r == NULL) return NULL;
    base64_into(s, n, (char *)PyUnicode_1BYTE_DATA(r));
    return r;
}

static long frac_us(const unsigned char *b, Py_ssize_t p, int fsp, int *nbytes) {
    if (fsp <= 0) { *nbytes = 0; return 0; }
    if (fsp <= 2) { *nbytes = 1; return b[p] * 10000L; }
    if (fsp <= 4) { *nbytes = 2; return (b[p] << 8 | b[p + 1]) * 100L; }
    *nbytes = 3;
    return (long)b[p] << 16 | b[p + 1] << 8 | b[p + 2];
}

/* "Thh:mm:ss" then ".uuuuuu" when frac, then tail */
static int time_text(char *s, unsigned long h, unsigned long m, unsigned long sec, int frac, long us,
                     const char *tail) {
    int n = 0;
    s[n++] = 'T';
    n += put_pad(s + n, h, 2);
    s[n++] = ':';
    n += put_pad(s + n, m, 2);
    s[n++] = ':';
    n += put_pad(s + n, sec, 2);
    if (frac) {
        s[n++] = '.';
        n += put_pad(s + n, (unsigned long long)us, 6);
    }
    for (; *tail; tail++) s[n++] = *tail;
    return n;
}

int date_text(const unsigned char *b, Py_ssize_t p, char *out) {
    unsigned long x = b[p] | b[p + 1] << 8 | (unsigned long)b[p + 2] << 16;
    int n = put_pad(out, x >> 9, 4);
    out[n] = '-';
    n += 1 + put_pad(out + n + 1, x >> 5 & 15, 2);
    out[n] = '-';
    return n + 1 + put_pad(out + n + 1, x & 31, 2);
}

int timestamp2_text(const unsigned char *b, Py_ssize_t p, int fsp, Py_ssize_t *size_out, char *s) {
    int fb;
    unsigned long x = (unsigned long)b[p] << 24 | (unsigned long)b[p + 1] << 16 | b[p + 2] << 8 | b[p + 3];
    long us = frac_us(b, p + 4, fsp, &fb);
    *size_out = 4 + fb;
    if (!x && !us) {
        memcpy(s, "0000-00-00T00:00:00.000000Z", 27);
        return 27;
    }
    int n = civil((long long)(x / 86400), s);
    unsigned long r = x % 86400;
    return n + time_text(s + n, r / 3600, r / 60 % 60, r % 60, 1, us, "Z");
}

int datetime2_text(const unsigned char *b, Py_ssize_t p, int fsp, Py_ssize_t *size_out, char *s) {
    int fb;
    long long x = 0;
    for (int i = 0; i < 5; i++) x = x << 8 | b[p + i];
    x -= 549755813888LL;
    if (x < 0) return -1;
    long us = frac_us(b, p + 5, fsp, &fb);
    long long ymd = x >> 17, ym = ymd >> 5, hms = x & 131071;
    int n = put_pad(s, (unsigned long long)(ym / 13), 4);
    s[n] = '-';
    n += 1 + put_pad(s + n + 1, (unsigned long long)(ym % 13), 2);
    s[n] = '-';
    n += 1 + put_pad(s + n + 1, (unsigned long long)(ymd & 31), 2);
    n += time_text(s + n, (unsigned long)(hms >> 12), (unsigned long)(hms >> 6 & 63), (unsigned long)(hms & 63),
                   fsp != 0, us, "");
    *size_out = 5 + fb;
    return n;
}

/* one column value at b[*pp]; advances *pp */
static PyObject *column(Column *c, PyObject *buf, const unsigned char *b, Py_ssize_t len, Py_ssize_t *pp) {
    Py_ssize_t p = *pp;
    switch (c->kind) {
    case K_TINY: case K_UTINY:
        if (short_read(p, 1, len)) return NULL;
        *pp = p + 1;
        return PyLong_FromLong(c->kind == K_TINY ? (long)(signed char)b[p] : (long)b[p]);
    case K_SHORT: case K_USHORT: {
        if (short_read(p, 2, len)) return NULL;
        unsigned v = b[p] | b[p + 1] << 8;
        *pp = p + 2;
        return PyLong_FromLong(c->kind == K_SHORT ? (long)(short)v : (long)v);
    }
    case K_INT24: case K_UINT24: {
        if (short_read(p, 3, len)) return NULL;
        long v = b[p] | b[p + 1] << 8 | (long)b[p + 2] << 16;
        if (c->kind == K_INT24 && v > 8388607) v -= 16777216;
        *pp = p + 3;
        return PyLong_FromLong(v);
    }
    case K_LONG: case K_ULONG: {
        if (short_read(p, 4, len)) return NULL;
        unsigned long v = (unsigned long)b[p] | (unsigned long)b[p + 1] << 8 | (unsigned long)b[p + 2] << 16
                          | (unsigned long)b[p + 3] << 24;
        *pp = p + 4;
        return c->kind == K_LONG ? PyLong_FromLong((long)(int32_t)(uint32_t)v) : PyLong_FromUnsignedLong(v);
    }
    case K_LONGLONG: case K_ULONGLONG: {
        if (short_read(p, 8, len)) return NULL;
        unsigned long long v = 0;
        for (int i = 7; i >= 0; i--) v = v << 8 | b[p + i];
        *pp = p + 8;
        return c->kind == K_LONGLONG ? PyLong_FromLongLong((long long)v) : PyLong_FromUnsignedLongLong(v);
    }
    case K_DOUBLE: {
        if (short_read(p, 8, len)) return NULL;
        double d = PyFloat_Unpack8((const char *)b + p, 1);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        *pp = p + 8;
        return PyFloat_FromDouble(d);
    }
    case K_FLOAT: {
        if (short_read(p, 4, len)) return NULL;
        PyObject *k = PyBytes_FromStringAndSize((const char *)b + p, 4);
        if (k == NULL) return NULL;
        PyObject *v = PyDict_GetItemWithError(F32Cache, k);
        if (v != NULL) Py_INCREF(v);
        else if (!PyErr_Occurred()) v = PyObject_CallOneArg(F32Conv, k);
        Py_DECREF(k);
        if (v != NULL) *pp = p + 4;
        return v;
    }
    case K_DATE: {
        if (short_read(p, 3, len)) return NULL;
        char s[32];
        int n = date_text(b, p, s);
        *pp = p + 3;
        return PyUnicode_FromStringAndSize(s, n);
    }
    case K_DECIMAL: {
        Py_ssize_t size = 0;
        PyObject *v = decimal(b, p, len, (int)(c->arg >> 8), (int)(c->arg & 255), &size);
        if (v == NULL) return PyErr_Occurred() ? NULL : call_fn(c, buf, pp);
        *pp = p + size;
        return v;
    }
    case K_TIMESTAMP2: {
        if (short_read(p, 4 + (c->arg + 1) / 2, len)) return NULL;
        char s[80];
        Py_ssize_t size;
        int n = timestamp2_text(b, p, (int)c->arg, &size, s);
        *pp = p + size;
        return PyUnicode_FromStringAndSize(s, n);
    }
    case K_DATETIME2: {
        if (short_read(p, 5 + (c->arg + 1) / 2, len)) return NULL;
        char s[80];
        Py_ssize_t size;
        int n = datetime2_text(b, p, (int)c->arg, &size, s);
        if (n < 0) return call_fn(c, buf, pp);      /* not a date a server writes: the Python decoder's form */
        *pp = p + size;
        return PyUnicode_FromStringAndSize(s, n);
    }
    case K_UTF8: case K_BASE64: case K_JSONTEXT: {
        int lb = (int)c->arg;
        if (lb < 1 || lb > 4) return call_fn(c, buf, pp);
        if (short_read(p, lb, len)) return NULL;
        Py_ssize_t n = read_len(b, p, lb);
        p += lb;
        if (p + n > len) return call_fn(c, buf, pp);  /* a short value: the Python decoder's slicing */
        *pp = p + n;
        if (c->kind == K_BASE64) return base64(b + p, n);
        if (c->kind == K_JSONTEXT) return json_text(b + p, n);
        return PyUnicode_DecodeUTF8((const char *)b + p, n, "replace");
    }
    case K_NULLTYPE:
        Py_RETURN_NONE;
    default:
        return call_fn(c, buf, pp);
    }
}

/* one row image: the null bitmap of the present columns, then their values */
static PyObject *image(Plan *pl, PyObject *buf, const unsigned char *b, Py_ssize_t len, Py_ssize_t *pp) {
    Py_ssize_t n = pl->n, nb = (n + 7) / 8, p = *pp;
    if (short_read(p, nb > 0 ? nb : 1, len)) return NULL;
    const unsigned char *nulls = b + p;
    p += nb > 0 ? nb : 1;   /* the pure decoder reads one null byte even for an image with no columns */
    PyObject *row = _PyDict_NewPresized(n);
    if (row == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Column *c = &pl->cols[i];
        PyObject *v;
        if (nulls[i >> 3] >> (i & 7) & 1) v = Py_NewRef(Py_None);
        else if ((v = column(c, buf, b, len, &p)) == NULL) { Py_DECREF(row); return NULL; }
        int rc = PyDict_SetItem(row, c->name, v);
        Py_DECREF(v);
        if (rc < 0) { Py_DECREF(row); return NULL; }
    }
    *pp = p;
    return row;
}

/* decode_rows(plan, plan2, buf, pos, end) -> (rows, position reached) */
static PyObject *decode_rows(PyObject *self, PyObject *const *a, Py_ssize_t na) {
    if (na != 5) {
        PyErr_SetString(PyExc_TypeError, "decode_rows(plan, plan2 or None, buf, pos, end)");
        return NULL;
    }
    if (F32Cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._fastmy.init() was not called");
        return NULL;
    }
    Plan *pl = (Plan *)PyCapsule_GetPointer(a[0], PLAN_NAME);
    if (pl == NULL) return NULL;
    Plan *pl2 = NULL;
    if (a[1] != Py_None && (pl2 = (Plan *)PyCapsule_GetPointer(a[1], PLAN_NAME)) == NULL) return NULL;
    Py_ssize_t p = PyLong_AsSsize_t(a[3]);
    if (p == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(a[4]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    if (p < 0) { PyErr_SetString(PyExc_IndexError, "negative position"); return NULL; }
    /* the event as bytes (a bytearray or memoryview is copied once): the Python decoders get the same */
    PyObject *buf = PyBytes_Check(a[2]) ? Py_NewRef(a[2]) : PyBytes_FromObject(a[2]);
    if (buf == NULL) return NULL;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t len = PyBytes_GET_SIZE(buf);
    PyObject *out = PyList_New(0);
    if (out == NULL) { Py_DECREF(buf); return NULL; }
    while (p < end) {
        PyObject *item = image(pl, buf, b, len, &p);
        if (item != NULL && pl2 != NULL) {
            PyObject *after = image(pl2, buf, b, len, &p);
            PyObject *pair = after != NULL ? PyTuple_Pack(2, item, after) : NULL;
            Py_XDECREF(after);
            Py_DECREF(item);
            item = pair;
        }
        if (item == NULL) { Py_DECREF(out); Py_DECREF(buf); return NULL; }
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc < 0) { Py_DECREF(out); Py_DECREF(buf); return NULL; }
    }
    Py_DECREF(buf);
    PyObject *pos = PyLong_FromSsize_t(p);
    if (pos == NULL) { Py_DECREF(out); return NULL; }
    PyObject *r = PyTuple_Pack(2, out, pos);
    Py_DECREF(out);
    Py_DECREF(pos);
    return r;
}

static PyMethodDef methods[] = {
    {"init", (PyCFunction)(void (*)(void))init, METH_FASTCALL, "init(f32_cache, f32_converter, json_text, RawJson)"},
    {"plan", (PyCFunction)(void (*)(void))make_plan, METH_FASTCALL, "plan(names, kinds, args, fns) -> plan"},
    {"decode_rows", (PyCFunction)(void (*)(void))decode_rows, METH_FASTCALL,
     "decode_rows(plan, plan2 or None, buf, pos, end) -> (rows, position reached)"},
    {"render_rows", (PyCFunction)(void (*)(void))fm_render_rows, METH_FASTCALL,
     "render_rows(op, plan, plan2 or None, buf, pos, end) -> (rendered rows, row starts, position reached)"},
    {"changes_init", (PyCFunction)(void (*)(void))fm_changes_init, METH_FASTCALL,
     "changes_init(RenderedRowChange, member descriptors of its fields)"},
    {"rendered_changes", (PyCFunction)(void (*)(void))fm_rendered_changes, METH_FASTCALL,
     "rendered_changes(rendered, table, op, commit_time, commit_ts, txid, keys, layout, load, prefix, ordinal)"
     " -> (changes, missing)"},
    {"crc32", (PyCFunction)(void (*)(void))fm_crc32, METH_FASTCALL, "crc32(data, value=0) -> int, as zlib.crc32"},
    {"checksum_ok", fm_checksum_ok, METH_O, "checksum_ok(event) -> whether its last 4 bytes are the CRC-32 of the rest"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastmy", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastmy(void) { return PyModule_Create(&module); }
