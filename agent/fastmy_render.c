/* render_rows: a binlog rows event -> each row's values as the contract's JSON text, in one pass and with no
   Python object per column for the common kinds (agent/fastmy.py, docs/performance.md).

   Each row becomes the rendered row agent/_fastpg.c's render_dicts makes of the dicts decode_rows would
   have made for it (fastpg.h: RowHead, Cells, text), so the mapper renders its events in C (render_event)
   as it does PostgreSQL's. The value texts are the bytes orjson writes for those values: the kinds with C
   code are written here from the row image; a value that needs its Python decoder (K_CALL, a value
   outside the usual form) is decoded by it and its object written here. A row with a value this cannot
   write exactly as render_dicts would (a float orjson writes in exponent form, an integer beyond 2**63,
   an array...) comes back as None: the caller decodes that row into dicts and the mapper takes them on
   its dict path. Any error (a short image, a decoder that raises) is raised, and the caller decodes the
   event on the dict path, which raises what that path raises. Bytes in, bytes out: no I/O. */

#include "fastmy.h"
#include <math.h>
#include <stdio.h>
#include <structmember.h>

/* ---- the rendered row's layout, as agent/fastpg.h defines it (render_event reads it; its T_ tags are TAG_
   here, structmember.h has T_ names): kept in step by
   tests/test_fastmy_render.py, which compares every rendered row with render_dicts' for the same row */

enum { TAG_NULL = 0, TAG_INT = 1, TAG_STR = 2, TAG_STR_ESC = 3, TAG_BOOL = 4, TAG_FLOAT = 5, TAG_FLOAT_ZERO = 6, TAG_OTHER = 7 };

typedef struct {
    char op;           /* 'I' 'U' 'D' */
    char old_kind;     /* 'O' or 0 */
    uint16_t ncols;
    uint16_t ntuples;
    uint16_t pad;
} RowHead;

typedef struct {
    uint32_t off, len;
    uint8_t tag;
} Cell;

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Text;

static int text_grow(Text *t, Py_ssize_t extra) {
    Py_ssize_t cap = t->cap ? t->cap * 2 : 4096;
    while (cap < t->n + extra) cap *= 2;
    char *p = PyMem_Realloc(t->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->p = p;
    t->cap = cap;
    return 0;
}

static inline int put(Text *t, const void *s, Py_ssize_t n) {
    if (t->n + n > t->cap && text_grow(t, n) < 0) return -1;
    memcpy(t->p + t->n, s, n);
    t->n += n;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* orjson's string form of valid UTF-8 (fastpg_row.c's json_string): \" \\ \b \t \n \f \r, \u00xx for other
   controls; *esc: whether anything was escaped */
static int put_string(Text *t, const unsigned char *s, Py_ssize_t n, uint8_t *tag) {
    Py_ssize_t extra = 0;        /* the bytes escapes add: reserved exactly (a large text is not sized 6x) */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        extra += c == '"' || c == '\\' || c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r' ? 1 : 5;
    }
    if (t->n + n + extra + 2 > t->cap && text_grow(t, n + extra + 2) < 0) return -1;
    char *o = t->p + t->n;
    int esc = 0;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *o++ = (char)c; continue; }
        esc = 1;
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
    }
    *o++ = '"';
    t->n = o - t->p;
    *tag = esc ? TAG_STR_ESC : TAG_STR;
    return 0;
}

/* Whether every byte of s is printable ASCII (0x20-0x7F), and with `quotes` also neither '"' nor '\\': such
   text is valid UTF-8 and its JSON string is itself in quotes. Eight bytes at a time (most text columns are
   short ASCII); the word tests are exact once no byte has its high bit set. A text it refuses takes the
   byte-by-byte path, which is the reference for every text. */
static inline int ascii_plain(const unsigned char *s, Py_ssize_t n, int quotes) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t bad = w | ((w - ones * 0x20) & ~w);            /* a high bit set, or a byte < 0x20 */
        if (quotes) {
            uint64_t q = w ^ (ones * 0x22), bs = w ^ (ones * 0x5C);
            bad |= ((q - ones) & ~q) | ((bs - ones) & ~bs);     /* a byte that is '"' or '\\' */
        }
        if (bad & highs) return 0;
    }
    for (; i < n; i++) {
        unsigned char c = s[i];
        if (c < 0x20 || c >= 0x80 || (quotes && (c == '"' || c == '\\'))) return 0;
    }
    return 1;
}

/* ASCII text that needs no escape (dates, digits, base64) as a JSON string */
static int put_plain(Text *t, const char *s, Py_ssize_t n, uint8_t *tag) {
    if (t->n + n + 2 > t->cap && text_grow(t, n + 2) < 0) return -1;
    char *o = t->p + t->n;
    *o = '"';
    memcpy(o + 1, s, n);
    o[n + 1] = '"';
    t->n += n + 2;
    *tag = TAG_STR;
    return 0;
}

static int put_digits(Text *t, long long v, uint8_t *tag) {
    if (t->n + 24 > t->cap && text_grow(t, 24) < 0) return -1;
    t->n += put_int(t->p + t->n, v);
    *tag = TAG_INT;
    return 0;
}

/* a float as orjson writes it where that is Python's repr (no negative exponent); 1 otherwise */
static int put_double(Text *t, double d, uint8_t *tag) {
    if (!isfinite(d)) return 1;
    char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL) return -1;
    int rc = strstr(r, "e-") != NULL ? 1 : put(t, r, (Py_ssize_t)strlen(r));
    PyMem_Free(r);
    if (rc == 0) *tag = d == 0.0 ? TAG_FLOAT_ZERO : TAG_FLOAT;
    return rc;
}

/* a value a Python decoder made, as render_dicts' put_obj writes it at the top of a row; 1: not here */
static int put_value(Text *t, PyObject *v, uint8_t *tag) {
    if (v == Py_None) { *tag = TAG_NULL; return put(t, "null", 4); }
    if (v == Py_True || v == Py_False) {
        *tag = TAG_BOOL;
        return v == Py_True ? put(t, "true", 4) : put(t, "false", 5);
    }
    if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) { PyErr_Clear(); return 1; }
        return put_string(t, (const unsigned char *)s, n, tag);
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        if (overflow) return 1;
        return put_digits(t, x, tag);
    }
    if (PyFloat_CheckExact(v)) return put_double(t, PyFloat_AS_DOUBLE(v), tag);
    if (RawJsonType != NULL && Py_IS_TYPE(v, (PyTypeObject *)RawJsonType)) {
        PyObject *text = PyObject_GetAttrString(v, "text");
        if (text == NULL) return -1;
        Py_ssize_t n;
        const char *s = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
        int rc = s == NULL ? (PyErr_Clear(), 1) : put(t, s, n);
        Py_DECREF(text);
        *tag = TAG_OTHER;
        return rc;
    }
    return 1;       /* lists, bytes, anything else: render_dicts' own rules (the dict path) */
}

static int put_object(Text *t, PyObject *v, uint8_t *tag) {
    if (v == NULL) return -1;
    int rc = put_value(t, v, tag);
    Py_DECREF(v);
    return rc;
}

/* FLOAT columns: the text of the last values seen, by their 4 bytes (the pure path's float32 converter is
   a function of those bytes; most tables hold few distinct values), so a repeated value costs no Python */
#define F32_TEXTS_BITS 10
typedef struct {
    uint32_t bits;
    uint8_t used, tag, len;
    char text[32];
} F32Text;
static F32Text F32Texts[1 << F32_TEXTS_BITS];

void render_cache_clear(void) { memset(F32Texts, 0, sizeof F32Texts); }

/* one column value at b[*pp] as JSON text; advances *pp. 0 written, 1 not writable here, -1 error */
static int render_column(Text *t, Column *c, PyObject *buf, const unsigned char *b, Py_ssize_t len,
                         Py_ssize_t *pp, uint8_t *tag) {
    Py_ssize_t p = *pp;
    char s[128];
    switch (c->kind) {
    case K_TINY: case K_UTINY:
        if (short_read(p, 1, len)) return -1;
        *pp = p + 1;
        return put_digits(t, c->kind == K_TINY ? (long long)(signed char)b[p] : (long long)b[p], tag);
    case K_SHORT: case K_USHORT: {
        if (short_read(p, 2, len)) return -1;
        unsigned v = b[p] | b[p + 1] << 8;
        *pp = p + 2;
        return put_digits(t, c->kind == K_SHORT ? (long long)(short)v : (long long)v, tag);
    }
    case K_INT24: case K_UINT24: {
        if (short_read(p, 3, len)) return -1;
        long v = b[p] | b[p + 1] << 8 | (long)b[p + 2] << 16;
        if (c->kind == K_INT24 && v > 8388607) v -= 16777216;
        *pp = p + 3;
        return put_digits(t, v, tag);
    }
    case K_LONG: case K_ULONG: {
        if (short_read(p, 4, len)) return -1;
        uint32_t v = (uint32_t)b[p] | (uint32_t)b[p + 1] << 8 | (uint32_t)b[p + 2] << 16 | (uint32_t)b[p + 3] << 24;
        *pp = p + 4;
        return put_digits(t, c->kind == K_LONG ? (long long)(int32_t)v : (long long)v, tag);
    }
    case K_LONGLONG: case K_ULONGLONG: {
        if (short_read(p, 8, len)) return -1;
        unsigned long long v = 0;
        for (int i = 7; i >= 0; i--) v = v << 8 | b[p + i];
        *pp = p + 8;
        if (c->kind == K_ULONGLONG && v > (unsigned long long)LLONG_MAX) return 1;   /* as put_obj: not here */
        return put_digits(t, (long long)v, tag);
    }
    case K_DOUBLE: {
        if (short_read(p, 8, len)) return -1;
        double d = PyFloat_Unpack8((const char *)b + p, 1);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        *pp = p + 8;
        return put_double(t, d, tag);
    }
    case K_FLOAT: {
        if (short_read(p, 4, len)) return -1;
        uint32_t bits = (uint32_t)b[p] | (uint32_t)b[p + 1] << 8 | (uint32_t)b[p + 2] << 16 | (uint32_t)b[p + 3] << 24;
        F32Text *slot = &F32Texts[(bits * 2654435761u) >> (32 - F32_TEXTS_BITS)];
        if (slot->used && slot->bits == bits) {
            *pp = p + 4;
            *tag = slot->tag;
            return put(t, slot->text, slot->len);
        }
        PyObject *k = PyBytes_FromStringAndSize((const char *)b + p, 4);
        if (k == NULL) return -1;
        PyObject *v = PyDict_GetItemWithError(F32Cache, k);
        if (v != NULL) Py_INCREF(v);
        else if (!PyErr_Occurred()) v = PyObject_CallOneArg(F32Conv, k);
        Py_DECREF(k);
        if (v != NULL) *pp = p + 4;
        Py_ssize_t at = t->n;
        int rc = put_object(t, v, tag);
        if (rc == 0 && t->n - at <= (Py_ssize_t)sizeof slot->text) {
            memcpy(slot->text, t->p + at, (size_t)(t->n - at));
            slot->len = (uint8_t)(t->n - at);
            slot->tag = *tag;
            slot->bits = bits;
            slot->used = 1;
        }
        return rc;
    }
    case K_DATE:
        if (short_read(p, 3, len)) return -1;
        *pp = p + 3;
        return put_plain(t, s, date_text(b, p, s), tag);
    case K_DECIMAL: {
        Py_ssize_t size = 0;
        int n = decimal_text(b, p, len, (int)(c->arg >> 8), (int)(c->arg & 255), &size, s);
        if (n < 0) return put_object(t, call_fn(c, buf, pp), tag);
        *pp = p + size;
        return put_plain(t, s, n, tag);
    }
    case K_TIMESTAMP2: {
        if (short_read(p, 4 + (c->arg + 1) / 2, len)) return -1;
        Py_ssize_t size;
        int n = timestamp2_text(b, p, (int)c->arg, &size, s);
        *pp = p + size;
        return put_plain(t, s, n, tag);
    }
    case K_DATETIME2: {
        if (short_read(p, 5 + (c->arg + 1) / 2, len)) return -1;
        Py_ssize_t size;
        int n = datetime2_text(b, p, (int)c->arg, &size, s);
        if (n < 0) return put_object(t, call_fn(c, buf, pp), tag);
        *pp = p + size;
        return put_plain(t, s, n, tag);
    }
    case K_UTF8: case K_BASE64: case K_JSONTEXT: {
        int lb = (int)c->arg;
        if (lb < 1 || lb > 4) return put_object(t, call_fn(c, buf, pp), tag);
        if (short_read(p, lb, len)) return -1;
        Py_ssize_t n = read_len(b, p, lb);
        p += lb;
        if (p + n > len) return put_object(t, call_fn(c, buf, pp), tag);
        *pp = p + n;
        const unsigned char *v = b + p;
        if (c->kind == K_BASE64) {
            Py_ssize_t out = (n + 2) / 3 * 4;
            if (t->n + out + 2 > t->cap && text_grow(t, out + 2) < 0) return -1;
            t->p[t->n] = '"';
            base64_into(v, n, t->p + t->n + 1);
            t->p[t->n + 1 + out] = '"';
            t->n += out + 2;
            *tag = TAG_STR;
            return 0;
        }
        /* the usual text first: printable ASCII is valid UTF-8, needs no escape and holds no line break */
        if (c->kind == K_UTF8 && ascii_plain(v, n, 1)) return put_plain(t, (const char *)v, n, tag);
        if (c->kind == K_JSONTEXT && ascii_plain(v, n, 0) && json_valid(v, n) == 1) {
            *tag = TAG_OTHER;
            return put(t, v, n);
        }
        if (!utf8_valid(v, n)) {            /* errors replaced, as the decoder does, then written */
            PyObject *o = c->kind == K_JSONTEXT ? json_text(v, n) : PyUnicode_DecodeUTF8((const char *)v, n, "replace");
            return put_object(t, o, tag);
        }
        if (c->kind == K_UTF8) return put_string(t, v, n, tag);
        /* JSON text: RawJson(text) when it is JSON on one line (written as it is), else json_text's value */
        if (json_valid(v, n) == 1 && !memchr(v, '\n', (size_t)n) && !memchr(v, '\r', (size_t)n)) {
            *tag = TAG_OTHER;
            return put(t, v, n);
        }
        return put_object(t, json_text(v, n), tag);
    }
    case K_NULLTYPE:
        *tag = TAG_NULL;
        return put(t, "null", 4);
    default:
        return put_object(t, call_fn(c, buf, pp), tag);
    }
}

/* one row image (null bitmap of the present columns, then their values) into cells */
static int render_image(Plan *pl, PyObject *buf, const unsigned char *b, Py_ssize_t len, Py_ssize_t *pp,
                        Text *t, Cell *cells) {
    Py_ssize_t n = pl->n, nb = (n + 7) / 8, p = *pp;
    if (short_read(p, nb > 0 ? nb : 1, len)) return -1;
    const unsigned char *nulls = b + p;
    p += nb > 0 ? nb : 1;
    int result = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Cell *c = &cells[i];
        c->off = (uint32_t)t->n;
        c->tag = TAG_NULL;
        int rc;
        if (nulls[i >> 3] >> (i & 7) & 1) rc = put(t, "null", 4);
        else rc = render_column(t, &pl->cols[i], buf, b, len, &p, &c->tag);
        if (rc < 0) return -1;
        if (rc > 0) result = 1;      /* this row goes to the dict path; the image is read on to its end */
        c->len = (uint32_t)(t->n - c->off);
    }
    *pp = p;
    return result;
}

static PyObject *pack(const RowHead *head, const Cell *cells, Py_ssize_t ncells, const Text *t) {
    Py_ssize_t cellbytes = sizeof(Cell) * ncells;
    PyObject *out = PyBytes_FromStringAndSize(NULL, sizeof *head + cellbytes + t->n);
    if (out != NULL) {
        char *o = PyBytes_AS_STRING(out);
        memcpy(o, head, sizeof *head);
        memcpy(o + sizeof *head, cells, cellbytes);
        memcpy(o + sizeof *head + cellbytes, t->p, t->n);
    }
    return out;
}

/* render_rows(op, plan, plan2, buf, pos, end) -> (rendered, starts, position reached): rendered[i] the
   bytes of row i (None: decode it into dicts), starts the offset of each row's first image as uint32
   little-endian; None when this event's rows cannot be rendered here at all (no columns, too many) */
PyObject *fm_render_rows(PyObject *self, PyObject *const *a, Py_ssize_t na) {
    if (na != 6 || !PyUnicode_Check(a[0]) || !PyBytes_Check(a[3])) {
        PyErr_SetString(PyExc_TypeError, "render_rows(op: str, plan, plan2 or None, buf: bytes, pos, end)");
        return NULL;
    }
    if (F32Cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._fastmy.init() was not called");
        return NULL;
    }
    Plan *pl = (Plan *)PyCapsule_GetPointer(a[1], PLAN_NAME);
    if (pl == NULL) return NULL;
    Plan *pl2 = NULL;
    if (a[2] != Py_None && (pl2 = (Plan *)PyCapsule_GetPointer(a[2], PLAN_NAME)) == NULL) return NULL;
    Py_ssize_t p = PyLong_AsSsize_t(a[4]);
    if (p == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(a[5]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    if (p < 0) { PyErr_SetString(PyExc_IndexError, "negative position"); return NULL; }
    Py_ssize_t ncols = pl->n;
    if (ncols == 0 || ncols > 0xFFFE || (pl2 != NULL && pl2->n != ncols)) Py_RETURN_NONE;
    RowHead head = {0};
    head.ncols = (uint16_t)ncols;
    Py_UCS4 op = PyUnicode_GET_LENGTH(a[0]) ? PyUnicode_READ_CHAR(a[0], 0) : 0;
    if (op == 'i' && pl2 == NULL) { head.op = 'I'; head.ntuples = 1; }
    else if (op == 'u' && pl2 != NULL) { head.op = 'U'; head.old_kind = 'O'; head.ntuples = 2; }
    else if (op == 'd' && pl2 == NULL) { head.op = 'D'; head.old_kind = 'O'; head.ntuples = 1; }
    else Py_RETURN_NONE;
    PyObject *buf = a[3];
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t len = PyBytes_GET_SIZE(buf);
    Py_ssize_t ncells = ncols * head.ntuples;
    Cell *cells = PyMem_Calloc((size_t)ncells, sizeof(Cell));   /* zeroed: the bytes between fields too */
    PyObject *out = PyList_New(0);
    Text t = {NULL, 0, 0}, starts = {NULL, 0, 0};
    if (cells == NULL || out == NULL) {
        PyMem_Free(cells);
        Py_XDECREF(out);
        return PyErr_NoMemory();
    }
    while (p < end) {
        uint32_t start = (uint32_t)p;
        t.n = 0;
        int rc;
        if (head.op == 'U') {               /* the old image comes first in the event, second in the cells */
            rc = render_image(pl, buf, b, len, &p, &t, cells + ncols);
            if (rc >= 0) {
                int rc2 = render_image(pl2, buf, b, len, &p, &t, cells);
                rc = rc2 < 0 ? rc2 : rc | rc2;
            }
        } else {
            rc = render_image(pl, buf, b, len, &p, &t, cells);
        }
        if (rc < 0 || put(&starts, &start, 4) < 0) goto fail;
        PyObject *row = rc == 0 && t.n <= 0xFFFFFFF0 ? pack(&head, cells, ncells, &t) : Py_NewRef(Py_None);
        if (row == NULL) goto fail;
        int ok = PyList_Append(out, row);
        Py_DECREF(row);
        if (ok < 0) goto fail;
    }
    PyMem_Free(cells);
    PyMem_Free(t.p);
    PyObject *sb = PyBytes_FromStringAndSize(starts.p ? starts.p : "", starts.n);
    PyMem_Free(starts.p);
    PyObject *r = sb != NULL ? Py_BuildValue("(NNn)", out, sb, p) : NULL;
    if (sb == NULL) Py_DECREF(out);
    return r;
fail:
    PyMem_Free(cells);
    PyMem_Free(t.p);
    PyMem_Free(starts.p);
    Py_DECREF(out);
    return NULL;
}

/* ---- the source's RenderedRowChanges (agent/fastrow.py), made here: one per rendered row, with its fields
   set the way RenderedRowChange.__init__ sets them, but without running Python code per row. changes_init
   hands over the class and the member descriptors of its slots (in CHANGE_FIELDS order, agent/fastmy.py). */

enum { F_TABLE, F_OP, F_POSITION, F_COMMIT_TIME, F_COMMIT_TS, F_TXID, F_KEYS, F_UNAVAILABLE, F_ID_KEY, F_TARGET,
       F_RENDERED, F_LAYOUT, F_LOAD, F_MESSAGE, F_LOADED, F_COUNT };

static PyTypeObject *ChangeType = NULL;
static Py_ssize_t ChangeOffsets[F_COUNT];

PyObject *fm_changes_init(PyObject *self, PyObject *const *a, Py_ssize_t na) {
    if (na != 2 || !PyType_Check(a[0]) || !PyTuple_Check(a[1]) || PyTuple_GET_SIZE(a[1]) != F_COUNT) {
        PyErr_SetString(PyExc_TypeError, "changes_init(cls, member descriptors of its fields)");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)a[0];
    for (Py_ssize_t i = 0; i < F_COUNT; i++) {
        PyObject *d = PyTuple_GET_ITEM(a[1], i);
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "changes_init: field %zd is not a slot", i);
            return NULL;
        }
        PyMemberDescrObject *m = (PyMemberDescrObject *)d;
        if (m->d_member->type != T_OBJECT_EX || !PyType_IsSubtype(cls, PyDescr_TYPE(m))
                || m->d_member->offset + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "changes_init: field %zd is not an object slot of the class", i);
            return NULL;
        }
        ChangeOffsets[i] = m->d_member->offset;
    }
    Py_XSETREF(ChangeType, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

static inline void set_field(PyObject *o, int f, PyObject *v) {
    *(PyObject **)((char *)o + ChangeOffsets[f]) = v;     /* a new reference; the slot was NULL */
}

/* rendered_changes(rendered, table, op, commit_time, commit_ts, txid, keys, layout, load, prefix, ordinal)
   -> (changes, missing): a RenderedRowChange for each rendered row (position prefix + its ordinal from
   ordinal + 1 on, message: the row's index i, for load(i)), None where rendered[i] is None (the caller makes
   that row's RowChange); missing: how many Nones */
PyObject *fm_rendered_changes(PyObject *self, PyObject *const *a, Py_ssize_t na) {
    if (na != 11 || !PyList_Check(a[0]) || !PyUnicode_Check(a[9])) {
        PyErr_SetString(PyExc_TypeError, "rendered_changes(rendered: list, table, op, commit_time, commit_ts, txid, "
                                         "keys, layout, load, prefix: str, ordinal: int)");
        return NULL;
    }
    if (ChangeType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._fastmy.changes_init() was not called");
        return NULL;
    }
    Py_ssize_t plen;
    const char *prefix = PyUnicode_AsUTF8AndSize(a[9], &plen);
    if (prefix == NULL) return NULL;
    long long ordinal = PyLong_AsLongLong(a[10]);
    if (ordinal == -1 && PyErr_Occurred()) return NULL;
    if (ordinal < 0) {
        PyErr_SetString(PyExc_ValueError, "rendered_changes: negative ordinal");
        return NULL;
    }
    int ascii = PyUnicode_IS_ASCII(a[9]);
    if (plen > 200) {
        PyErr_SetString(PyExc_ValueError, "rendered_changes: position prefix too long");
        return NULL;
    }
    PyObject *rendered = a[0];
    Py_ssize_t n = PyList_GET_SIZE(rendered), missing = 0;
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    char pos[256];
    memcpy(pos, prefix, (size_t)plen);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(rendered, i);
        if (r == Py_None) {
            PyList_SET_ITEM(out, i, Py_NewRef(Py_None));
            missing++;
            continue;
        }
        int k = put_pad(pos + plen, (unsigned long long)(ordinal + 1 + i), 8);
        PyObject *position = ascii ? PyUnicode_New(plen + k, 127) : PyUnicode_DecodeUTF8(pos, plen + k, NULL);
        if (position != NULL && ascii) memcpy(PyUnicode_1BYTE_DATA(position), pos, (size_t)(plen + k));
        PyObject *message = position ? PyLong_FromSsize_t(i) : NULL;
        PyObject *o = message ? ChangeType->tp_alloc(ChangeType, 0) : NULL;
        if (o == NULL) {
            Py_XDECREF(position);
            Py_XDECREF(message);
            Py_DECREF(out);
            return NULL;
        }
        set_field(o, F_TABLE, Py_NewRef(a[1]));
        set_field(o, F_OP, Py_NewRef(a[2]));
        set_field(o, F_POSITION, position);
        set_field(o, F_COMMIT_TIME, Py_NewRef(a[3]));
        set_field(o, F_COMMIT_TS, Py_NewRef(a[4]));
        set_field(o, F_TXID, Py_NewRef(a[5]));
        set_field(o, F_KEYS, Py_NewRef(a[6]));
        set_field(o, F_UNAVAILABLE, PyTuple_New(0));
        set_field(o, F_ID_KEY, Py_NewRef(Py_None));
        set_field(o, F_TARGET, Py_NewRef(Py_None));
        set_field(o, F_RENDERED, Py_NewRef(r));
        set_field(o, F_LAYOUT, Py_NewRef(a[7]));
        set_field(o, F_LOAD, Py_NewRef(a[8]));
        set_field(o, F_MESSAGE, message);
        set_field(o, F_LOADED, Py_NewRef(Py_False));
        PyList_SET_ITEM(out, i, o);
    }
    return Py_BuildValue("(Nn)", out, missing);
}
