/* render_row: a pgoutput Insert/Update/Delete message -> its column values as the contract's JSON text, in
   one pass and with no Python object per column (agent/fastpath.py).

   Each value becomes exactly the bytes orjson writes for the value the pure path makes of it (pgoutput.py's
   decode_tuple with pgvalues.py's converters). Values in the forms the source connection's settings
   produce are converted here; any other form goes through the column's Python converter and its result is
   written here. Whatever this cannot reproduce exactly -- an unchanged TOAST value ('u'), a binary value,
   a malformed message, a converter that raises, a float inside an array, an integer orjson refuses --
   makes the whole row None, and the caller decodes that message on the pure path, which also raises
   whatever that path raises. Bytes in, bytes out: no I/O. */

#include "fastpg.h"

int buf_grow(Buf *b, Py_ssize_t extra) {
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->n + extra) cap *= 2;
    char *p = b->p == b->small ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->small) memcpy(p, b->small, b->n);
    b->p = p;
    b->cap = cap;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* whether any of the 8 bytes of w is a control (< 0x20), '"' or '\\': the bit tricks of "Bit Twiddling Hacks"
   (hasless, haszero), which may flag more bytes than those but never miss one. Lets json_string pass over
   8 plain bytes at a time (it was 4% of the capture process's CPU byte by byte). */
static inline int special8(uint64_t w) {
    uint64_t lt = (w - ONES * 0x20) & ~w;
    uint64_t q = w ^ (ONES * '"'), bs = w ^ (ONES * '\\');
    return ((lt | ((q - ONES) & ~q) | ((bs - ONES) & ~bs)) & HIGHS) != 0;
}

int json_string(Buf *b, const unsigned char *s, Py_ssize_t n, int *escaped) {
    if (b->n + n + 2 > b->cap && buf_grow(b, n + 2) < 0) return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    Py_ssize_t start = 0;
    int esc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!special8(w)) {
                i += 7;             /* and the loop's i++ */
                continue;
            }
        }
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        esc = 1;
        Py_ssize_t len = i - start;
        b->n = o - b->p;
        if (b->n + len + 8 > b->cap && buf_grow(b, len + 8 + (n - i)) < 0) return -1;
        o = b->p + b->n;
        memcpy(o, s + start, len);
        o += len;
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\t': *o++ = 't'; break;
        case '\n': *o++ = 'n'; break;
        case '\f': *o++ = 'f'; break;
        case '\r': *o++ = 'r'; break;
        default: *o++ = 'u'; *o++ = '0'; *o++ = '0'; *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
        }
        start = i + 1;
    }
    Py_ssize_t len = n - start;
    b->n = o - b->p;
    if (b->n + len + 1 > b->cap && buf_grow(b, len + 1) < 0) return -1;
    o = b->p + b->n;
    memcpy(o, s + start, len);
    o += len;
    *o++ = '"';
    b->n = o - b->p;
    if (escaped) *escaped = esc;
    return 0;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_ascii(const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] >= 0x80) return 0;
    return 1;
}

/* ---- values the Python converters made, written as orjson writes them. 0 done, 1 cannot, -1 error. */

static int put_longlong(Buf *b, long long v) {
    char tmp[24];
    tmp[0] = '-';
    return v < 0 ? buf_put(b, tmp, 1 + put_udec(tmp + 1, 0ULL - (unsigned long long)v, 1))
                 : buf_put(b, tmp, put_udec(tmp, (unsigned long long)v, 1));
}

/* a float as orjson writes it: Python's repr where the two agree (no negative exponent), else orjson's */
static int put_double(Buf *b, double d, uint8_t *tag) {
    if (!isfinite(d)) return 1;               /* orjson writes null; the converters never make one */
    char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL) return -1;
    int rc;
    if (strstr(r, "e-") == NULL) {
        rc = buf_put(b, r, (Py_ssize_t)strlen(r));
    } else if (FpJsonDumps != NULL) {
        PyObject *f = PyFloat_FromDouble(d), *out = NULL;
        if (f != NULL) out = PyObject_CallOneArg(FpJsonDumps, f);
        Py_XDECREF(f);
        rc = out == NULL ? -1 : buf_put(b, PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out));
        Py_XDECREF(out);
    } else {
        rc = 1;
    }
    PyMem_Free(r);
    if (rc == 0 && tag) *tag = d == 0.0 ? T_FLOAT_ZERO : T_FLOAT;
    return rc;
}

static int put_obj(Buf *b, PyObject *v, uint8_t *tag, int depth) {
    if (v == Py_None) return BUF_LIT(b, "null");
    if (v == Py_True || v == Py_False) {
        if (tag == NULL) return 1;          /* in an array: [True] == [1] though they write differently */
        *tag = T_BOOL;
        return v == Py_True ? BUF_LIT(b, "true") : BUF_LIT(b, "false");
    }
    if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) { PyErr_Clear(); return 1; }          /* a lone surrogate: orjson refuses it too */
        int esc;
        if (json_string(b, (const unsigned char *)s, n, &esc) < 0) return -1;
        if (tag) *tag = esc ? T_STR_ESC : T_STR;
        return 0;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        if (overflow) return 1;                              /* (up to 2**64-1 orjson would write it: rare) */
        if (tag) *tag = T_INT;
        return put_longlong(b, x);
    }
    if (PyFloat_CheckExact(v)) {
        if (tag == NULL) return 1;       /* a float in an array: its equality is not its text's (0.0, -0.0) */
        return put_double(b, PyFloat_AS_DOUBLE(v), tag);
    }
    if (FpRawJsonType != NULL && Py_IS_TYPE(v, (PyTypeObject *)FpRawJsonType)) {
        if (tag == NULL) return 1;      /* in an array: equal text would not mean equal values (str vs json) */
        PyObject *text = PyObject_GetAttrString(v, "text");
        if (text == NULL) return -1;
        Py_ssize_t n;
        const char *s = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
        int rc = s == NULL ? (PyErr_Clear(), 1) : buf_put(b, s, n);
        Py_DECREF(text);
        if (tag) *tag = T_OTHER;
        return rc;
    }
    if (PyList_CheckExact(v)) {
        if (depth > 200) return 1;
        if (buf_putc(b, '[') < 0) return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
            if (i && buf_putc(b, ',') < 0) return -1;
            int rc = put_obj(b, PyList_GET_ITEM(v, i), NULL, depth + 1);
            if (rc) return rc;
        }
        if (tag) *tag = T_LIST;
        return buf_putc(b, ']');
    }
    return 1;
}

static int call_conv(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    PyObject *raw = PyBytes_FromStringAndSize((const char *)s, n);
    if (raw == NULL) return -1;
    PyObject *v = PyObject_CallOneArg(conv, raw);
    Py_DECREF(raw);
    if (v == NULL) {             /* the pure path raises it again, where it says what went wrong */
        PyErr_Clear();
        return 1;
    }
    *tag = T_NULL;
    int rc = put_obj(b, v, tag, 0);
    Py_DECREF(v);
    return rc;
}

/* ---- the common types, in the forms the source connection's settings produce */

static int put_ascii_str(Buf *b, const char *s, Py_ssize_t n, uint8_t *tag) {
    int esc;
    if (json_string(b, (const unsigned char *)s, n, &esc) < 0) return -1;
    *tag = esc ? T_STR_ESC : T_STR;
    return 0;
}

static int conv_int(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    Py_ssize_t i = (n > 0 && s[0] == '-') ? 1 : 0;
    if (n - i < 1 || n - i > 19) return call_conv(b, conv, s, n, tag);
    unsigned long long v = 0;
    for (Py_ssize_t j = i; j < n; j++) {
        if (!is_digit(s[j])) return call_conv(b, conv, s, n, tag);
        v = v * 10 + (unsigned)(s[j] - '0');         /* 19 digits fit in 64 unsigned bits */
    }
    if (v > (i ? 9223372036854775808ULL : 9223372036854775807ULL)) return call_conv(b, conv, s, n, tag);
    *tag = T_INT;
    char tmp[24];
    int neg = i && v != 0;                  /* "-0" is 0 */
    tmp[0] = '-';
    return buf_put(b, tmp, neg + put_udec(tmp + neg, v, 1));
}

/* Whether repr(float(s)) is s itself, or s + ".0" for an integer: 1 (2 when the value is zero), else 0. So
   for PostgreSQL's float text in its usual forms, which since version 12 is the shortest that reads back
   (extra_float_digits >= 1): no exponent, no leading zero but "0" before the point, no trailing zero after
   it, at most 15 significant digits and at most 3 zeros after "0.". Then no other decimal of as many digits
   or fewer is the same double (any decimal of <= 15 digits reads back exactly, DBL_DIG), so repr's shortest
   digits are s's, and repr writes them without an exponent (decimal exponent -4 .. 15). What this skips,
   strtod, repr and their FPU control word changes, was ~4% of the capture process's CPU. */
static int repr_as_is(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = s[0] == '-' ? 1 : 0, ip = 0, fp = 0, zeros = 0;
    while (i + ip < n && is_digit(s[i + ip])) ip++;
    if (ip == 0 || (ip > 1 && s[i] == '0')) return 0;
    Py_ssize_t j = i + ip;
    if (j == n) return ip > 15 ? 0 : s[i] == '0' ? 2 : 1;      /* an integer: repr adds ".0" */
    if (s[j] != '.') return 0;
    j++;
    while (j + fp < n && is_digit(s[j + fp])) fp++;
    if (fp == 0 || j + fp != n || s[n - 1] == '0') return 0;
    if (s[i] != '0') return ip + fp <= 15;
    while (zeros < fp && s[j + zeros] == '0') zeros++;
    return zeros <= 3 && fp - zeros <= 15;
}

static int conv_float(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    char tmp[64];
    Py_ssize_t i = 0, digits = 0;
    if (n <= 0 || n >= (Py_ssize_t)sizeof tmp) return call_conv(b, conv, s, n, tag);
    if (s[i] == '-') i++;
    while (i < n && is_digit(s[i])) { i++; digits++; }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i])) { i++; digits++; }
    }
    if (digits == 0) return call_conv(b, conv, s, n, tag);
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        Py_ssize_t e = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        while (i < n && is_digit(s[i])) { i++; e++; }
        if (e == 0) return call_conv(b, conv, s, n, tag);
    }
    if (i != n) return call_conv(b, conv, s, n, tag);
    int fixed = repr_as_is(s, n);
    if (fixed) {
        *tag = fixed == 2 ? T_FLOAT_ZERO : T_FLOAT;
        if (buf_put(b, s, n) < 0) return -1;
        return memchr(s, '.', (size_t)n) ? 0 : BUF_LIT(b, ".0");
    }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    double d = PyOS_string_to_double(tmp, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred()) return -1;
    return put_double(b, d, tag);
}

static int conv_tstz(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    char out[32];
    if (n >= 22 && n <= 29 && s[n - 3] == '+' && s[n - 2] == '0' && s[n - 1] == '0' && s[10] == ' '
        && s[4] == '-' && is_ascii(s, n)) {
        memcpy(out, s, 10);
        out[10] = 'T';
        if (n == 29) {
            memcpy(out + 11, s + 11, 15);
            out[26] = 'Z';
            return put_ascii_str(b, out, 27, tag);
        }
        if (n == 22) {
            memcpy(out + 11, s + 11, 8);
            memcpy(out + 19, ".000000Z", 8);
            return put_ascii_str(b, out, 27, tag);
        }
        if (n > 23 && s[19] == '.') {
            memcpy(out + 11, s + 11, n - 14);
            memcpy(out + n - 3, "000000", 29 - n);
            out[26] = 'Z';
            return put_ascii_str(b, out, 27, tag);
        }
    }
    return call_conv(b, conv, s, n, tag);
}

static int conv_date(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    if (n == 10 && s[4] == '-' && is_ascii(s, n)) return put_ascii_str(b, (const char *)s, n, tag);
    return call_conv(b, conv, s, n, tag);
}

static int conv_ts(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    if (n >= 19 && n < 27 && s[10] == ' ' && s[4] == '-' && is_ascii(s, n)
        && (n == 19 || (n > 20 && s[19] == '.' && s[n - 1] != 'C'))) {
        char out[40];
        memcpy(out, s, n);
        out[10] = 'T';
        if (n == 19 || n == 26) return put_ascii_str(b, out, n, tag);
        /* pgvalues.frac6: the fraction padded to 6 digits (all digits here, or the converter decides) */
        Py_ssize_t j = 20;
        while (j < n && is_digit(s[j])) j++;
        if (j == n) {
            for (Py_ssize_t k = n; k < 26; k++) out[k] = '0';
            return put_ascii_str(b, out, 26, tag);
        }
    }
    return call_conv(b, conv, s, n, tag);
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int conv_bytea(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    if (n < 2 || s[0] != '\\' || s[1] != 'x' || (n - 2) % 2) return call_conv(b, conv, s, n, tag);
    for (Py_ssize_t i = 2; i < n; i++)
        if (hexval(s[i]) < 0) return call_conv(b, conv, s, n, tag);
    Py_ssize_t nraw = (n - 2) / 2, nout = (nraw + 2) / 3 * 4;
    if (b->n + nout + 2 > b->cap && buf_grow(b, nout + 2) < 0) return -1;
    char *o = b->p + b->n;
    const unsigned char *h = s + 2;
    *o++ = '"';
    Py_ssize_t i = 0;
#define RAW(k) ((unsigned)(hexval(h[2 * (k)]) << 4 | hexval(h[2 * (k) + 1])))
    for (; i + 2 < nraw; i += 3) {
        unsigned v = RAW(i) << 16 | RAW(i + 1) << 8 | RAW(i + 2);
        *o++ = B64[v >> 18 & 63]; *o++ = B64[v >> 12 & 63]; *o++ = B64[v >> 6 & 63]; *o++ = B64[v & 63];
    }
    if (nraw - i == 1) {
        unsigned v = RAW(i) << 16;
        *o++ = B64[v >> 18 & 63]; *o++ = B64[v >> 12 & 63]; *o++ = '='; *o++ = '=';
    } else if (nraw - i == 2) {
        unsigned v = RAW(i) << 16 | RAW(i + 1) << 8;
        *o++ = B64[v >> 18 & 63]; *o++ = B64[v >> 12 & 63]; *o++ = B64[v >> 6 & 63]; *o++ = '=';
    }
#undef RAW
    *o++ = '"';
    b->n = o - b->p;
    *tag = T_STR;
    return 0;
}

/* ---- JSON text per RFC 8259, for json/jsonb values. Text this accepts is JSON to rawjson.is_json too
   (orjson accepts it, or else Python's parser does: numbers beyond double range, lone surrogate escapes),
   so it goes in verbatim; anything else (deeper nesting than JSON_DEPTH included) goes to the converter. */

#define JSON_DEPTH 200

typedef struct {
    const unsigned char *s;
    Py_ssize_t i, n;
} JP;

static void jws(JP *p) {
    while (p->i < p->n) {
        unsigned char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        p->i++;
    }
}

static int jlit(JP *p, const char *lit, Py_ssize_t n) {
    if (p->n - p->i < n || memcmp(p->s + p->i, lit, n) != 0) return 0;
    p->i += n;
    return 1;
}

static int jstring(JP *p) {
    if (p->i >= p->n || p->s[p->i] != '"') return 0;
    p->i++;
    while (p->i < p->n) {
        unsigned char c = p->s[p->i++];
        if (c == '"') return 1;
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (p->i >= p->n) return 0;
            c = p->s[p->i++];
            if (c == 'u') {
                if (p->n - p->i < 4) return 0;
                for (int k = 0; k < 4; k++)
                    if (hexval(p->s[p->i + k]) < 0) return 0;
                p->i += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return 0;
            }
        }
    }
    return 0;
}

static int jdigits(JP *p) {
    Py_ssize_t start = p->i;
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
    return p->i > start;
}

static int jnumber(JP *p) {
    if (p->s[p->i] == '-') p->i++;
    if (p->i >= p->n) return 0;
    if (p->s[p->i] == '0') p->i++;
    else if (!jdigits(p)) return 0;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (!jdigits(p)) return 0;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (!jdigits(p)) return 0;
    }
    return 1;
}

static int jvalue(JP *p, int depth) {
    jws(p);
    if (p->i >= p->n) return 0;
    unsigned char c = p->s[p->i];
    if (c == '{' || c == '[') {
        unsigned char close = c == '{' ? '}' : ']';
        if (depth >= JSON_DEPTH) return 0;
        p->i++;
        jws(p);
        if (p->i < p->n && p->s[p->i] == close) { p->i++; return 1; }
        for (;;) {
            if (c == '{') {
                jws(p);
                if (!jstring(p)) return 0;
                jws(p);
                if (p->i >= p->n || p->s[p->i] != ':') return 0;
                p->i++;
            }
            if (!jvalue(p, depth + 1)) return 0;
            jws(p);
            if (p->i >= p->n) return 0;
            if (p->s[p->i] == close) { p->i++; return 1; }
            if (p->s[p->i] != ',') return 0;
            p->i++;
        }
    }
    if (c == '"') return jstring(p);
    if (c == 't') return jlit(p, "true", 4);
    if (c == 'f') return jlit(p, "false", 5);
    if (c == 'n') return jlit(p, "null", 4);
    if (c == '-' || is_digit(c)) return jnumber(p);
    return 0;
}

static int json_valid(const unsigned char *s, Py_ssize_t n) {
    JP p = {s, 0, n};
    if (!jvalue(&p, 0)) return 0;
    jws(&p);
    return p.i == n;
}

/* pgvalues._json: JSON text with no line break in it goes in verbatim (rawjson.raw_json) */
static int conv_json(Buf *b, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    if (memchr(s, '\n', n) != NULL || memchr(s, '\r', n) != NULL || !utf8_valid(s, n) || !json_valid(s, n))
        return call_conv(b, conv, s, n, tag);
    *tag = T_OTHER;
    return buf_put(b, s, n);
}

static int convert(Buf *b, int kind, PyObject *conv, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    switch (kind) {
    case K_TEXT:
        if (!utf8_valid(s, n)) return 1;
        return put_ascii_str(b, (const char *)s, n, tag);
    case K_INT: return conv_int(b, conv, s, n, tag);
    case K_BOOL:
        *tag = T_BOOL;
        return (n == 1 && s[0] == 't') ? BUF_LIT(b, "true") : BUF_LIT(b, "false");
    case K_FLOAT:
        if (n > 0 && (s[0] == 'N' || s[0] == 'I' || (s[0] == '-' && n > 1 && s[1] == 'I'))) {
            if (!utf8_valid(s, n)) return 1;
            return put_ascii_str(b, (const char *)s, n, tag);      /* NaN, Infinity: strings */
        }
        return conv_float(b, conv, s, n, tag);
    case K_TSTZ: return conv_tstz(b, conv, s, n, tag);
    case K_DATE: return conv_date(b, conv, s, n, tag);
    case K_TS: return conv_ts(b, conv, s, n, tag);
    case K_BYTEA: return conv_bytea(b, conv, s, n, tag);
    case K_JSON: return conv_json(b, conv, s, n, tag);
    default: return call_conv(b, conv, s, n, tag);
    }
}

/* One TupleData at *pos into cells[0..ncols). 0 done, 1 not for this path, -1 error. */
static int tuple_cells(Buf *text, Cell *cells, Py_ssize_t ncols, const unsigned char *buf, Py_ssize_t len,
                       Py_ssize_t *pos, PyObject *convs, const unsigned char *kinds, Py_ssize_t nkinds) {
    Py_ssize_t p = *pos;
    if (p + 2 > len) return 1;
    Py_ssize_t n = buf[p] << 8 | buf[p + 1];
    p += 2;
    if (n != ncols) return 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p >= len) return 1;
        unsigned char k = buf[p];
        Cell *c = &cells[i];
        c->off = (uint32_t)text->n;
        c->tag = T_NULL;
        if (k == 'n') {
            if (BUF_LIT(text, "null") < 0) return -1;
            p += 1;
        } else if (k == 't') {
            if (p + 5 > len) return 1;
            Py_ssize_t ln = (Py_ssize_t)((uint32_t)buf[p + 1] << 24 | (uint32_t)buf[p + 2] << 16
                                         | (uint32_t)buf[p + 3] << 8 | (uint32_t)buf[p + 4]);
            p += 5;
            if (ln > len - p) return 1;
            int rc = convert(text, i < nkinds ? kinds[i] : K_CALL, PyTuple_GET_ITEM(convs, i), buf + p, ln, &c->tag);
            if (rc) return rc;
            p += ln;
        } else {
            return 1;            /* 'u' unchanged TOAST, 'b' binary, or garbage: the pure path */
        }
        c->len = (uint32_t)(text->n - c->off);
    }
    *pos = p;
    return 0;
}

/* The rendered row as one bytes object (head, cells, text), None when rc > 0 (the pure path takes it), NULL
   with the exception set when rc < 0; frees cells and text either way. */
static PyObject *
pack_rendered(int rc, const RowHead *head, Cell *cells, Py_ssize_t ncells, Buf *text)
{
    PyObject *out = NULL;
    if (rc == 0 && text->n > 0xFFFFFFF0) rc = 1;
    if (rc == 0) {
        Py_ssize_t cellbytes = sizeof(Cell) * ncells;
        out = PyBytes_FromStringAndSize(NULL, sizeof *head + cellbytes + text->n);
        if (out != NULL) {
            char *o = PyBytes_AS_STRING(out);
            memcpy(o, head, sizeof *head);
            memcpy(o + sizeof *head, cells, cellbytes);
            memcpy(o + sizeof *head + cellbytes, text->p, text->n);
        }
    } else if (rc > 0) {
        out = Py_NewRef(Py_None);
    }
    PyMem_Free(cells);
    buf_free(text);
    return out;
}

/* render_row's work on the frame buf[0:len], the row message at pos: 0 rendered (head, *cells, *ncells and
   text set), 1 for the pure path, -1 an error; text is initialised either way, and the caller frees *cells
   unless it is `stack` (used when the row's cells fit its nstack). */
int fp_row_cells(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos, PyObject *convs,
                 const unsigned char *kinds, Py_ssize_t nkinds, RowHead *headp, Cell **cellsp, Py_ssize_t *ncellsp,
                 Buf *text, Cell *stack, Py_ssize_t nstack) {
    buf_init(text);
    *cellsp = NULL;
    Py_ssize_t ncols = PyTuple_GET_SIZE(convs);
    if (pos < 0 || pos + 6 > len || ncols == 0 || ncols > 1600) return 1;
    RowHead head = {0};
    head.op = (char)buf[pos];
    head.ncols = (uint16_t)ncols;
    Py_ssize_t p = pos + 5;
    unsigned char t = buf[p];
    if (head.op == 'I') {
        if (t != 'N') return 1;
        head.ntuples = 1;
    } else if (head.op == 'U') {
        if (t == 'K' || t == 'O') head.old_kind = (char)t;
        else if (t != 'N') return 1;
        head.ntuples = head.old_kind ? 2 : 1;
    } else if (head.op == 'D') {
        if (t != 'K' && t != 'O') return 1;
        head.old_kind = (char)t;
        head.ntuples = 1;
    } else {
        return 1;
    }
    p += 1;
    Py_ssize_t ncells = ncols * head.ntuples;
    Cell *cells = ncells <= nstack ? stack : PyMem_Malloc(sizeof(Cell) * ncells);
    if (cells == NULL) return PyErr_NoMemory(), -1;
    *cellsp = cells;
    memset(cells, 0, sizeof(Cell) * ncells);        /* (their padding too: the same row, the same bytes) */
    int rc;
    if (head.op == 'U' && head.old_kind) {      /* the old tuple comes first in the message, second here */
        rc = tuple_cells(text, cells + ncols, ncols, buf, len, &p, convs, kinds, nkinds);
        if (rc == 0 && (p >= len || buf[p] != 'N')) rc = 1;
        p += 1;
        if (rc == 0) rc = tuple_cells(text, cells, ncols, buf, len, &p, convs, kinds, nkinds);
    } else {
        rc = tuple_cells(text, cells, ncols, buf, len, &p, convs, kinds, nkinds);
    }
    if (rc == 0 && text->n > 0xFFFFFFF0) rc = 1;
    *headp = head, *cellsp = cells, *ncellsp = ncells;
    return rc;
}

PyObject *fp_render_row(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "render_row(buf: bytes, pos, converters: tuple, kinds: bytes)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    RowHead head;
    Cell *cells;
    Py_ssize_t ncells = 0;
    Buf text;
    int rc = fp_row_cells((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), pos, args[2],
                          (const unsigned char *)PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3]), &head,
                          &cells, &ncells, &text, NULL, 0);
    return pack_rendered(rc, &head, cells, ncells, &text);
}

/* ---- render_dicts: the same rendered row from the before/after dicts of any source's RowChange (values
   already in their JSON form), so that every source's changes get render_event. Each dict must hold exactly
   the layout's columns in its order; a value put_obj cannot write exactly makes it None (the pure path). */

static int dict_cells(Buf *text, Cell *cells, PyObject *d, PyObject *names) {
    Py_ssize_t ncols = PyTuple_GET_SIZE(names);
    if (!PyDict_CheckExact(d) || PyDict_GET_SIZE(d) != ncols) return 1;
    Py_ssize_t it = 0, i = 0;
    PyObject *k, *val;
    while (PyDict_Next(d, &it, &k, &val)) {
        PyObject *want = PyTuple_GET_ITEM(names, i);
        if (k != want && (!PyUnicode_CheckExact(k) || PyUnicode_Compare(k, want) != 0)) {
            PyErr_Clear();
            return 1;
        }
        Cell *c = &cells[i];
        c->off = (uint32_t)text->n;
        c->tag = T_NULL;
        int rc = put_obj(text, val, &c->tag, 0);
        if (rc) return rc;
        c->len = (uint32_t)(text->n - c->off);
        i++;
    }
    return 0;
}

PyObject *fp_render_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "render_dicts(op: str, before, after, names: tuple)");
        return NULL;
    }
    PyObject *before = args[1], *after = args[2], *names = args[3];
    Py_ssize_t ncols = PyTuple_GET_SIZE(names);
    if (ncols == 0 || ncols > 0xFFFE || PyUnicode_GET_LENGTH(args[0]) < 1) Py_RETURN_NONE;
    RowHead head = {0};
    head.ncols = (uint16_t)ncols;
    Py_UCS4 op = PyUnicode_READ_CHAR(args[0], 0);
    PyObject *first, *second = NULL;
    if (op == 'i' && before == Py_None && after != Py_None) {
        head.op = 'I';
        first = after;
    } else if (op == 'u' && after != Py_None) {
        head.op = 'U';
        first = after;
        if (before != Py_None) {
            head.old_kind = 'O';
            second = before;
        }
    } else if (op == 'd' && before != Py_None && after == Py_None) {
        head.op = 'D';
        head.old_kind = 'O';
        first = before;
    } else {
        Py_RETURN_NONE;
    }
    head.ntuples = second ? 2 : 1;
    Py_ssize_t ncells = ncols * head.ntuples;
    Cell *cells = PyMem_Malloc(sizeof(Cell) * ncells);
    if (cells == NULL) return PyErr_NoMemory();
    Buf text;
    buf_init(&text);
    int rc = dict_cells(&text, cells, first, names);
    if (rc == 0 && second) rc = dict_cells(&text, cells + ncols, second, names);
    return pack_rendered(rc, &head, cells, ncells, &text);
}
