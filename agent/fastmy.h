/* Shared by the C files of agent._fastmy (agent/_fastmy.c: row images -> Python values, fastmy_render.c:
   row images -> their values' JSON text). */

#ifndef CDC_FASTMY_H
#define CDC_FASTMY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "fasttext.h"

enum {
    K_CALL = 0,       /* the column's Python decoder */
    K_TINY = 1, K_UTINY = 2, K_SHORT = 3, K_USHORT = 4, K_INT24 = 5, K_UINT24 = 6,
    K_LONG = 7, K_ULONG = 8, K_LONGLONG = 9, K_ULONGLONG = 10,
    K_DOUBLE = 11,
    K_FLOAT = 12,     /* shortest float32 repr, through the pure path's cache and converter */
    K_DATE = 13,
    K_DECIMAL = 14,   /* arg: precision << 8 | scale */
    K_TIMESTAMP2 = 15, /* arg: fractional digits */
    K_DATETIME2 = 16, /* arg: fractional digits */
    K_UTF8 = 17,      /* arg: length bytes; decoded as UTF-8 with errors replaced */
    K_BASE64 = 18,    /* arg: length bytes; binary -> base64 text */
    K_JSONTEXT = 19,  /* arg: length bytes; UTF-8 text -> RawJson when it is JSON, else myvalues.json_text */
    K_NULLTYPE = 20,  /* MYSQL_TYPE_NULL: always None, no bytes */
    K_MAX = 20
};

extern PyObject *F32Cache;     /* binlog_rows._f32_cache: raw 4 bytes -> float */
extern PyObject *F32Conv;      /* binlog_rows._float32_cached */
extern PyObject *JsonText;     /* myvalues.json_text */
extern PyObject *RawJsonType;  /* agent.rawjson.RawJson */

typedef struct {
    int kind;
    long arg;
    PyObject *name;
    PyObject *fn;
} Column;

typedef struct {
    Py_ssize_t n;
    Column cols[1];
} Plan;

extern const char *PLAN_NAME;

static inline int put_int(char *o, long long v) {
    if (v >= 0) return put_udec(o, (unsigned long long)v, 1);
    o[0] = '-';
    return 1 + put_udec(o + 1, 0ULL - (unsigned long long)v, 1);
}

/* the decoding steps both files share (agent/_fastmy.c) */
int short_read(Py_ssize_t p, Py_ssize_t need, Py_ssize_t len);
PyObject *call_fn(Column *c, PyObject *buf, Py_ssize_t *pp);
Py_ssize_t read_len(const unsigned char *b, Py_ssize_t p, int lenbytes);
int json_valid(const unsigned char *s, Py_ssize_t n);
PyObject *json_text(const unsigned char *s, Py_ssize_t n);
/* the text of a DECIMAL at src[p] into out (>= 128 bytes): its length, or -1 when not in the usual form */
int decimal_text(const unsigned char *src, Py_ssize_t p, Py_ssize_t len, int precision, int scale,
                 Py_ssize_t *size_out, char *out);
/* TIMESTAMP2 / DATETIME2 at b[p] (the caller checked the bytes are there): the text into out (>= 80 bytes),
   its length, or -1 (DATETIME2 only: not a date a server writes); *size_out: the value's bytes */
int timestamp2_text(const unsigned char *b, Py_ssize_t p, int fsp, Py_ssize_t *size_out, char *out);
int datetime2_text(const unsigned char *b, Py_ssize_t p, int fsp, Py_ssize_t *size_out, char *out);
int date_text(const unsigned char *b, Py_ssize_t p, char *out);
extern const char B64[];
void base64_into(const unsigned char *s, Py_ssize_t n, char *o);

void render_cache_clear(void);     /* (init() calls it: the converters may change) */
PyObject *fm_render_rows(PyObject *self, PyObject *const *a, Py_ssize_t na);
PyObject *fm_changes_init(PyObject *self, PyObject *const *a, Py_ssize_t na);
PyObject *fm_rendered_changes(PyObject *self, PyObject *const *a, Py_ssize_t na);

#endif
