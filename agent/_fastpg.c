/* Compiled core of the PostgreSQL hot path: pgoutput TupleData -> the contract's JSON values.

   decode_tuple(buf, pos, converters, kinds) does what agent/pgoutput.py's decode_tuple does, with the
   common column types converted here instead of through their Python converter. `kinds` has one byte per
   column (agent/fastpath.py assigns them from the converter the pure path chose): for a kind handled here,
   values in the form the source connection's settings produce (TimeZone=UTC, DateStyle=ISO,
   bytea_output=hex) are converted in C, and anything else -- every unusual form -- is handed to the
   column's Python converter, so the pure path stays the reference for every edge case.
   Bytes in, values out: no I/O, no state besides the two markers set once by init(). */

#include "fastpg.h"

PyObject *FpDecodeError = NULL;   /* agent.pgoutput.DecodeError */
PyObject *FpUnchanged = NULL;     /* agent.pgoutput.UNCHANGED */
PyObject *FpJsonLoads = NULL;     /* orjson.loads: rawjson.is_json's first check */
PyObject *FpRawJsonType = NULL;   /* agent.rawjson.RawJson */
PyObject *FpJsonDumps = NULL;     /* orjson.dumps: floats whose repr is not orjson's form */

static int is_ascii(const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] >= 0x80) return 0;
    return 1;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static PyObject *call_conv(PyObject *conv, const char *s, Py_ssize_t n) {
    PyObject *b = PyBytes_FromStringAndSize(s, n);
    if (b == NULL) return NULL;
    PyObject *r = PyObject_CallOneArg(conv, b);
    Py_DECREF(b);
    return r;
}

/* int(b) for PostgreSQL's integer text: an optional '-' and up to 18 digits (never overflows int64). */
static PyObject *conv_int(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = (n > 0 && s[0] == '-') ? 1 : 0;
    if (n - i < 1 || n - i > 18) return call_conv(conv, (const char *)s, n);
    long long v = 0;
    for (Py_ssize_t j = i; j < n; j++) {
        if (!is_digit(s[j])) return call_conv(conv, (const char *)s, n);
        v = v * 10 + (s[j] - '0');
    }
    return PyLong_FromLongLong(i ? -v : v);
}

/* float(b) for [-]digits[.digits][e[+-]digits]; NaN/Infinity and anything else through the converter. */
static PyObject *conv_float(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    char tmp[64];
    Py_ssize_t i = 0, digits = 0;
    if (n <= 0 || n >= (Py_ssize_t)sizeof tmp) return call_conv(conv, (const char *)s, n);
    if (s[i] == '-') i++;
    while (i < n && is_digit(s[i])) { i++; digits++; }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i])) { i++; digits++; }
    }
    if (digits == 0) return call_conv(conv, (const char *)s, n);
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        Py_ssize_t e = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        while (i < n && is_digit(s[i])) { i++; e++; }
        if (e == 0) return call_conv(conv, (const char *)s, n);
    }
    if (i != n) return call_conv(conv, (const char *)s, n);
    memcpy(tmp, s, n);
    tmp[n] = 0;
    double d = PyOS_string_to_double(tmp, NULL, NULL);   /* correctly rounded, as float() is */
    if (d == -1.0 && PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(d);
}

/* pgvalues.frac6 on ASCII text: the fraction after the first '.' padded or cut to 6 digits. */
static PyObject *frac6_ascii(const char *s, Py_ssize_t n) {
    const char *dot = memchr(s, '.', n);
    if (dot == NULL) return PyUnicode_DecodeASCII(s, n, NULL);
    Py_ssize_t i = dot - s, j = i + 1;
    while (j < n && is_digit((unsigned char)s[j])) j++;
    if (j - i - 1 == 6) return PyUnicode_DecodeASCII(s, n, NULL);
    char out[128];
    Py_ssize_t nd = j - i - 1, tail = n - j;
    if (i + 1 + 6 + tail > (Py_ssize_t)sizeof out) return NULL;   /* caller falls back */
    memcpy(out, s, i + 1);
    for (Py_ssize_t k = 0; k < 6; k++) out[i + 1 + k] = k < nd ? s[i + 1 + k] : '0';
    memcpy(out + i + 7, s + j, tail);
    return PyUnicode_DecodeASCII(out, i + 7 + tail, NULL);
}

/* pgvalues.timestamptz_text's UTC fast path ('YYYY-MM-DD HH:MM:SS[.f]+00' -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ'). */
static PyObject *conv_tstz(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    char out[32];
    if (n >= 22 && n <= 29 && s[n - 3] == '+' && s[n - 2] == '0' && s[n - 1] == '0' && s[10] == ' '
        && s[4] == '-' && is_ascii(s, n)) {
        memcpy(out, s, 10);
        out[10] = 'T';
        if (n == 29) {
            memcpy(out + 11, s + 11, 15);
            out[26] = 'Z';
            return PyUnicode_DecodeASCII(out, 27, NULL);
        }
        if (n == 22) {
            memcpy(out + 11, s + 11, 8);
            memcpy(out + 19, ".000000Z", 8);
            return PyUnicode_DecodeASCII(out, 27, NULL);
        }
        if (n > 23 && s[19] == '.') {
            memcpy(out + 11, s + 11, n - 14);
            memcpy(out + n - 3, "000000", 29 - n);
            out[26] = 'Z';
            return PyUnicode_DecodeASCII(out, 27, NULL);
        }
    }
    return call_conv(conv, (const char *)s, n);
}

/* pgvalues.date_text's fast path: 'YYYY-MM-DD' as it is. */
static PyObject *conv_date(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    if (n == 10 && s[4] == '-' && is_ascii(s, n)) return PyUnicode_DecodeASCII((const char *)s, n, NULL);
    return call_conv(conv, (const char *)s, n);
}

/* pgvalues.timestamp_text's fast path: 'YYYY-MM-DD HH:MM:SS[.f]' -> 'YYYY-MM-DDTHH:MM:SS[.ffffff]'. */
static PyObject *conv_ts(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    if (n >= 19 && n < 27 && s[10] == ' ' && s[4] == '-' && is_ascii(s, n)
        && (n == 19 || (n > 20 && s[19] == '.' && s[n - 1] != 'C'))) {
        char buf[32];
        memcpy(buf, s, n);
        buf[10] = 'T';
        if (n == 19 || n == 26) return PyUnicode_DecodeASCII(buf, n, NULL);
        PyObject *r = frac6_ascii(buf, n);
        if (r != NULL || PyErr_Occurred()) return r;
    }
    return call_conv(conv, (const char *)s, n);
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* pgvalues.bytea_to_base64 for hex output ('\x0a1b...'); escape format and bad hex through the converter. */
static PyObject *conv_bytea(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    if (n < 2 || s[0] != '\\' || s[1] != 'x' || (n - 2) % 2) return call_conv(conv, (const char *)s, n);
    Py_ssize_t nraw = (n - 2) / 2;
    Py_ssize_t nout = (nraw + 2) / 3 * 4;
    unsigned char *raw = PyMem_Malloc(nraw ? nraw : 1);
    if (raw == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < nraw; i++) {
        int hi = hexval(s[2 + 2 * i]), lo = hexval(s[3 + 2 * i]);
        if (hi < 0 || lo < 0) {
            PyMem_Free(raw);
            return call_conv(conv, (const char *)s, n);
        }
        raw[i] = (unsigned char)(hi << 4 | lo);
    }
    PyObject *str = PyUnicode_New(nout, 127);
    if (str == NULL) {
        PyMem_Free(raw);
        return NULL;
    }
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(str);
    Py_ssize_t i = 0, k = 0;
    for (; i + 2 < nraw; i += 3) {
        unsigned v = raw[i] << 16 | raw[i + 1] << 8 | raw[i + 2];
        o[k++] = B64[v >> 18 & 63]; o[k++] = B64[v >> 12 & 63]; o[k++] = B64[v >> 6 & 63]; o[k++] = B64[v & 63];
    }
    if (nraw - i == 1) {
        unsigned v = raw[i] << 16;
        o[k++] = B64[v >> 18 & 63]; o[k++] = B64[v >> 12 & 63]; o[k++] = '='; o[k++] = '=';
    } else if (nraw - i == 2) {
        unsigned v = raw[i] << 16 | raw[i + 1] << 8;
        o[k++] = B64[v >> 18 & 63]; o[k++] = B64[v >> 12 & 63]; o[k++] = B64[v >> 6 & 63]; o[k++] = '=';
    }
    PyMem_Free(raw);
    return str;
}

/* pgvalues._json when the text is UTF-8 that orjson accepts and holds no line break: RawJson(text), as
   rawjson.raw_json makes it. Anything else (line breaks to blank out, numbers orjson refuses, not JSON)
   through the converter. */
static PyObject *conv_json(PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    if (FpJsonLoads == NULL || memchr(s, '\n', n) != NULL || memchr(s, '\r', n) != NULL)
        return call_conv(conv, (const char *)s, n);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (text == NULL) {
        PyErr_Clear();
        return call_conv(conv, (const char *)s, n);
    }
    PyObject *parsed = PyObject_CallOneArg(FpJsonLoads, text);
    if (parsed == NULL) {
        PyErr_Clear();      /* the converter says what it is (and raises what it raises) */
        Py_DECREF(text);
        return call_conv(conv, (const char *)s, n);
    }
    Py_DECREF(parsed);
    PyObject *r = PyObject_CallOneArg(FpRawJsonType, text);
    Py_DECREF(text);
    return r;
}

static PyObject *convert(int kind, PyObject *conv, const unsigned char *s, Py_ssize_t n) {
    switch (kind) {
    case K_TEXT: return PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    case K_INT: return conv_int(conv, s, n);
    case K_BOOL: return Py_NewRef((n == 1 && s[0] == 't') ? Py_True : Py_False);
    case K_FLOAT: return conv_float(conv, s, n);
    case K_TSTZ: return conv_tstz(conv, s, n);
    case K_DATE: return conv_date(conv, s, n);
    case K_TS: return conv_ts(conv, s, n);
    case K_BYTEA: return conv_bytea(conv, s, n);
    case K_JSON: return conv_json(conv, s, n);
    default: return call_conv(conv, (const char *)s, n);
    }
}

static PyObject *decode_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg != NULL) {
        PyErr_SetObject(FpDecodeError, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

static PyObject *decode_tuple(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode_tuple(buf, pos, converters, kinds)");
        return NULL;
    }
    if (FpDecodeError == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._fastpg.init() was not called");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL, *convs = NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t len = view.len;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) goto done;
    convs = PySequence_Fast(args[2], "converters must be a sequence");
    if (convs == NULL) goto done;
    if (!PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "kinds must be bytes");
        goto done;
    }
    const unsigned char *kinds = (const unsigned char *)PyBytes_AS_STRING(args[3]);
    Py_ssize_t nconv = PySequence_Fast_GET_SIZE(convs);
    Py_ssize_t nkinds = PyBytes_GET_SIZE(args[3]);
    if (pos < 0 || pos + 2 > len) {
        decode_error("tuple data is truncated");
        goto done;
    }
    Py_ssize_t n = buf[pos] << 8 | buf[pos + 1];
    pos += 2;
    if (n > nconv) {
        decode_error("tuple has %zd columns, the relation %zd", n, nconv);
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pos >= len) {
            decode_error("tuple data is truncated");
            goto fail;
        }
        unsigned char k = buf[pos];
        PyObject *v;
        if (k == 't' || k == 'b') {
            if (pos + 5 > len) {
                decode_error("tuple data is truncated");
                goto fail;
            }
            Py_ssize_t ln = (Py_ssize_t)((uint32_t)buf[pos + 1] << 24 | (uint32_t)buf[pos + 2] << 16
                                         | (uint32_t)buf[pos + 3] << 8 | (uint32_t)buf[pos + 4]);
            pos += 5;
            if (ln > len - pos) {
                decode_error("tuple data is truncated");
                goto fail;
            }
            if (k == 't')
                v = convert(i < nkinds ? kinds[i] : K_CALL, PySequence_Fast_GET_ITEM(convs, i), buf + pos, ln);
            else
                v = PyBytes_FromStringAndSize((const char *)buf + pos, ln);
            if (v == NULL) goto fail;
            pos += ln;
        } else if (k == 'n') {
            v = Py_NewRef(Py_None);
            pos += 1;
        } else if (k == 'u') {
            v = Py_NewRef(FpUnchanged);
            pos += 1;
        } else {
            decode_error("unknown tuple column kind '%c' at byte %zd", (int)k, pos);
            goto fail;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyObject *res = Py_BuildValue("(On)", out, pos);
    Py_DECREF(out);
    out = res;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(convs);
    PyBuffer_Release(&view);
    return out;
}

static PyObject *init(PyObject *self, PyObject *args) {
    PyObject *err, *unchanged, *loads = NULL, *rawjson = NULL, *dumps = NULL;
    if (!PyArg_ParseTuple(args, "OO|OOO", &err, &unchanged, &loads, &rawjson, &dumps)) return NULL;
    if (err != Py_None) Py_XSETREF(FpDecodeError, Py_NewRef(err));          /* None: leave as it is */
    if (unchanged != Py_None) Py_XSETREF(FpUnchanged, Py_NewRef(unchanged));
    if (loads != NULL && rawjson != NULL) {
        Py_XSETREF(FpJsonLoads, Py_NewRef(loads));
        Py_XSETREF(FpRawJsonType, Py_NewRef(rawjson));
    }
    if (dumps != NULL) Py_XSETREF(FpJsonDumps, Py_NewRef(dumps));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_tuple", (PyCFunction)(void (*)(void))decode_tuple, METH_FASTCALL,
     "decode_tuple(buf, pos, converters, kinds) -> (values, position after the tuple)"},
    {"render_row", (PyCFunction)(void (*)(void))fp_render_row, METH_FASTCALL,
     "render_row(buf, pos, converters, kinds) -> the row message's values as JSON (bytes), or None"},
    {"render_dicts", (PyCFunction)(void (*)(void))fp_render_dicts, METH_FASTCALL,
     "render_dicts(op, before, after, names) -> a RowChange's row images as render_row's JSON, or None"},
    {"render_event", (PyCFunction)(void (*)(void))fp_render_event, METH_FASTCALL,
     "render_event(row, plan, position, time, txid) -> (id, subject, body), None (skipped) or False"},
    {"take_rows", (PyCFunction)(void (*)(void))fp_take_rows, METH_FASTCALL,
     "take_rows(get_copy_data, rels, out, max_items, final_lsn, ordinal, time, ts, txid[, arena]) -> (ordinal, n, frame)"},
    {"render_events", (PyCFunction)(void (*)(void))fp_render_events, METH_FASTCALL,
     "render_events(changes, start, rules, out[, store]) -> index of the first change not mapped"},
    {"run_end", (PyCFunction)(void (*)(void))fp_run_end, METH_FASTCALL,
     "run_end(items, start, stop, cls) -> index of the first of items[start:stop] not of class cls, else stop"},
    {"event_bounds", fp_event_bounds, METH_O,
     "event_bounds(events) -> (min position, max position, min commit_ts, max commit_ts, one only_target) or None"},
    {"libpq_resolve", fp_libpq_resolve, METH_NOARGS,
     "libpq_resolve() -> (path, '') of the one libpq loaded, (None, why not), or None once resolved"},
    {"libpq_facts", fp_libpq_facts, METH_O,
     "libpq_facts(pgconn_ptr) -> (PQlibVersion, PQbackendPID, PQsocket, PQserverVersion) by the libpq resolved"},
    {"init_glue", (PyCFunction)(void (*)(void))fp_init_glue, METH_FASTCALL,
     "init_glue(RenderedRowChange, slots, MappedEvent, slots): the classes take_rows and render_events make"},
    {"blake2b16", fp_blake2b16, METH_O, "blake2b16(data) -> the 16-byte BLAKE2b digest as hex"},
    {"blake2b16_many", fp_blake2b16_many, METH_O, "blake2b16_many(list of bytes) -> their blake2b16, four at a time"},
    {"pack_events", (PyCFunction)(void (*)(void))fp_pack_events, METH_FASTCALL,
     "pack_events(events, into) -> a spool frame's head lists and its bodies (their size in `into`, or a view), or None"},
    {"join_lines", fp_join_lines, METH_O,
     "join_lines(runs) -> the JSON lines of runs (payload, starts, offs, ids, lo, hi) of frames, or None"},
    {"head_index", (PyCFunction)(void (*)(void))fp_head_index, METH_FASTCALL,
     "head_index(head, n) -> (end, index, ts, size) of a frame head's JSON for its lines, or None"},
    {"head_latencies", (PyCFunction)(void (*)(void))fp_head_latencies, METH_FASTCALL,
     "head_latencies(ts, now, lo, hi) -> [now - t for the commit times lo .. hi - 1]"},
    {"init", init, METH_VARARGS,
     "init(DecodeError, UNCHANGED[, orjson.loads, RawJson, orjson.dumps]): the decoder's exception and marker"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "agent._fastpg",
                                    "Compiled pgoutput decoding and event rendering (agent/fastpath.py)", -1,
                                    methods};

PyMODINIT_FUNC PyInit__fastpg(void) {
    if (PyType_Ready(&FpBodyStoreType) < 0 || PyType_Ready(&FpRowChunkType) < 0 || PyType_Ready(&FpRowArenaType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddObjectRef(m, "BodyStore", (PyObject *)&FpBodyStoreType) < 0
                      || PyModule_AddObjectRef(m, "RowChunk", (PyObject *)&FpRowChunkType) < 0
                      || PyModule_AddObjectRef(m, "RowArena", (PyObject *)&FpRowArenaType) < 0))
        Py_CLEAR(m);
    return m;
}
