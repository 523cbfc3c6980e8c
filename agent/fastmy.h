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
extern const char DIGIT_PAIRS[201];     /* "00" "01" ... "99" */

/* how many decimal digits v has (1 for 0) */
static inline int count_digits(unsigned long long v) {
    int n = 1;
    for (;;) {
        if (v < 10) return n;
        if (v < 100) return n + 1;
        if (v < 1000) return n + 2;
        if (v < 10000) return n + 3;
        v /= 10000;
        n += 4;
    }
}

/* v's decimal digits (put_udec(o, v, 1)'s text), two at a time, written in place from the last (counting
   them first: a copy of a variable length out of a scratch buffer was a libc call per number) */
static inline int put_uvar(char *o, unsigned long long v) {
    int n = count_digits(v), i = n;
    while (v >= 100) {
        i -= 2;
        memcpy(o + i, DIGIT_PAIRS + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) memcpy(o, DIGIT_PAIRS + 2 * v, 2);
    else o[0] = (char)('0' + v);
    return n;
}

static inline int put_int(char *o, long long v) {
    if (v >= 0) return put_uvar(o, (unsigned long long)v);
    o[0] = '-';
    return 1 + put_uvar(o + 1, 0ULL - (unsigned long long)v);
}

/* v zero-padded to `width` digits, as put_udec writes it, two digits at a time from a table when v fits in
   width digits (dates, times, fractions, DECIMAL groups, position ordinals: many short numbers per row) */
static inline int put_pad(char *o, unsigned long long v, int width) {
    static const unsigned long long limit[10] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
                                                 10000000ULL, 100000000ULL, 1000000000ULL};
    if (width < 1 || width > 9 || v >= limit[width]) return put_udec(o, v, width);
    int i = width;
    while (i >= 2) {
        i -= 2;
        memcpy(o + i, DIGIT_PAIRS + 2 * (v % 100), 2);
        v /= 100;
    }
    if (i) o[0] = (char)('0' + v);
    return width;
}

/* the decoding steps both files share (agent/_fastmy.c) */
int short_read_error(Py_ssize_t p, Py_ssize_t need, Py_ssize_t len);   /* sets IndexError, returns 1 */
/* inline: both files test every column's bytes, and a call through the PLT per column showed in profiles */
static inline int short_read(Py_ssize_t p, Py_ssize_t need, Py_ssize_t len) {
    return p + need > len ? short_read_error(p, need, len) : 0;
}
static inline Py_ssize_t read_len(const unsigned char *b, Py_ssize_t p, int lenbytes) {
    Py_ssize_t n = 0;
    for (int i = lenbytes - 1; i >= 0; i--) n = n << 8 | b[p + i];
    return n;
}
PyObject *call_fn(Column *c, PyObject *buf, Py_ssize_t *pp);
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
/* fastmy_crc.c: zlib's CRC-32, folded with PCLMULQDQ where the CPU has it */
uint32_t fm_crc32_update(uint32_t crc, const uint8_t *p, size_t n);
PyObject *fm_crc32(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *fm_checksum_ok(PyObject *self, PyObject *ev);

#endif
