/* Shared by the C files of agent._fastpg (agent/_fastpg.c, fastpg_row.c, fastpg_event.c, fastpg_frame.c,
   fastpg_glue.c). */

#ifndef CDC_FASTPG_H
#define CDC_FASTPG_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "fasttext.h"

enum {
    K_CALL = 0,      /* the Python converter */
    K_TEXT = 1,      /* bytes.decode(): text, varchar, numeric, uuid ... */
    K_INT = 2,       /* int(b) */
    K_BOOL = 3,      /* b == b"t" */
    K_FLOAT = 4,     /* pgvalues._float */
    K_TSTZ = 5,      /* pgvalues._timestamptz */
    K_DATE = 6,      /* pgvalues._date */
    K_TS = 7,        /* pgvalues._timestamp */
    K_BYTEA = 8,     /* pgvalues.bytea_to_base64 */
    K_JSON = 9,      /* pgvalues._json */
};

/* the markers and callables init() hands over (agent/fastpath.py) */
extern PyObject *FpDecodeError, *FpUnchanged, *FpJsonLoads, *FpRawJsonType, *FpJsonDumps;

/* A growing byte buffer; starts on the stack. */
typedef struct {
    char *p;
    Py_ssize_t n, cap;
    char small[2048];
} Buf;

static inline void buf_init(Buf *b) { b->p = b->small; b->n = 0; b->cap = sizeof b->small; }
static inline void buf_free(Buf *b) { if (b->p != b->small) PyMem_Free(b->p); }
int buf_grow(Buf *b, Py_ssize_t extra);
/* n bytes from s to d, inline for the short pieces events are made of (names, values, punctuation): a call
   to libc's memcpy per piece was ~4% of the capture process's CPU. Reads and writes only [0, n). */
static inline void copy_short(char *d, const char *s, Py_ssize_t n) {
    if (n >= 16) {
        if (n > 32) {
            memcpy(d, s, (size_t)n);
            return;
        }
        memcpy(d, s, 16);                       /* (constant sizes: moves, no call) */
        memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else if (n > 0) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

static inline int buf_put(Buf *b, const void *s, Py_ssize_t n) {
    if (b->n + n > b->cap && buf_grow(b, n) < 0) return -1;
    copy_short(b->p + b->n, s, n);
    b->n += n;
    return 0;
}
static inline int buf_putc(Buf *b, char c) { return buf_put(b, &c, 1); }

/* a str of n bytes the caller knows are ASCII (hex digits, decimal digits, ':'): made without
   PyUnicode_DecodeASCII's check of each byte (per change: the position, the event's id) */
static inline PyObject *fp_ascii(const char *s, Py_ssize_t n) {
    PyObject *u = PyUnicode_New(n, 127);
    if (u != NULL) memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)n);
    return u;
}

/* one JSON line of a spool frame at w: the body's n bytes with its id (idn bytes) put back at off (off < 0:
   the body holds no cut id), then a newline; returns the end (join_lines' two kinds of run share it) */
static inline char *fp_put_line(char *w, const char *body, Py_ssize_t n, Py_ssize_t off, const char *id,
                                Py_ssize_t idn) {
    if (off < 0) {
        memcpy(w, body, (size_t)n);
        w += n;
    } else {
        memcpy(w, body, (size_t)off);
        w += off;
        memcpy(w, id, (size_t)idn);
        w += idn;
        memcpy(w, body + off, (size_t)(n - off));
        w += n - off;
    }
    *w++ = '\n';
    return w;
}
#define BUF_LIT(b, s) buf_put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* v as 16 upper-case hex digits at o (sprintf's %016llX) */
static inline void put_hex16(char *o, unsigned long long v) {
    static const char X[] = "0123456789ABCDEF";
    for (int i = 15; i >= 0; i--, v >>= 4) o[i] = X[v & 15];
}

/* orjson's string form of UTF-8 text known valid: quotes, \" \\ \b \t \n \f \r, \u00xx for other controls. */
int json_string(Buf *b, const unsigned char *s, Py_ssize_t n, int *escaped);
/* whether s is UTF-8 that Python's strict decoder accepts */

/* ---- the rendered row (fastpg_row.c makes it, fastpg_event.c reads it): one bytes object per change.
   RowHead, then ntuples * ncols Cells (tuple 0: the new row of an insert/update, the old row of a delete;
   tuple 1: the old row of an update that has one), then the JSON text the cells point into. */

enum {            /* what a cell's JSON text is, as far as the subject and the changed test care */
    T_NULL = 0,
    T_INT = 1,         /* an integer: its text is also str(value) */
    T_STR = 2,         /* a string with nothing escaped: the text between the quotes is the value */
    T_STR_ESC = 3,     /* a string with escapes */
    T_BOOL = 4,
    T_FLOAT = 5,       /* a float other than zero */
    T_FLOAT_ZERO = 6,  /* 0.0 or -0.0 (equal as values, different as text) */
    T_OTHER = 7,       /* embedded json */
    T_LIST = 8,        /* an array */
};

typedef struct {
    char op;           /* 'I' 'U' 'D' */
    char old_kind;     /* 'O' 'K' or 0 */
    uint16_t ncols;
    uint16_t ntuples;
    uint16_t pad;
} RowHead;

typedef struct {
    uint32_t off, len;
    uint8_t tag;
} Cell;

PyObject *fp_render_row(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_render_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_render_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
enum { FP_EVENT_MADE = 1, FP_EVENT_SKIP = 2, FP_EVENT_PURE = 3 };
int fp_event_parts(PyObject *const *args, PyObject **made);     /* render_event without its result tuple */
PyObject *fp_blake2b16(PyObject *self, PyObject *arg);
/* store: NULL for the body as bytes in made[2]; a BodyStore to add the body to it, made[2] its index */
int fp_event_parts_id(PyObject *const *args, PyObject **made, const char *given_id, PyObject *store,
                      const char *row, Py_ssize_t rowlen);   /* row NULL: args[0]'s bytes */
/* BLAKE2b-128 as hex: of one message in pieces (fastpg_event.c), of up to four at once (fastpg_blake4.c) */
/* BLAKE2b's initial vector and message schedule (fastpg_event.c), shared with the four-lane ids */
extern const uint64_t fp_blake_iv[8];
extern const uint8_t fp_blake_sigma[12][16];
void fp_blake2b16_hex(const uint8_t *const *parts, const Py_ssize_t *lens, int nparts, char out[32]);
void fp_blake2b16_hex4(int n, const uint8_t *const parts[][3], const Py_ssize_t lens[][3], char out[][32]);
PyObject *fp_blake2b16_many(PyObject *self, PyObject *arg);
PyObject *fp_pack_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs);      /* fastpg_frame.c */
PyObject *fp_join_lines(PyObject *self, PyObject *runs);                                 /* fastpg_frame.c */
PyObject *fp_head_index(PyObject *self, PyObject *const *args, Py_ssize_t nargs);       /* fastpg_head.c */
PyObject *fp_head_latencies(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
Py_ssize_t fp_indexed_lines(PyObject *run, char *w, char **endp);
PyObject *fp_init_glue(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
int fp_event_fields(PyObject *e, PyObject **f);     /* fastpg_glue.c: a MappedEvent's 7 fields at their slots */
PyObject *fp_take_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_render_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
/* fastpg_store.c: the bodies of one map call's compiled events, their ids cut out at FP_ID_AT */
#define FP_ID_AT 27         /* strlen("{\"specversion\":\"1.0\",\"id\":\"") */
extern PyTypeObject FpBodyStoreType;
int fp_store_check(PyObject *o);
const char *fp_store_data(PyObject *store);
Py_ssize_t fp_store_add(PyObject *store, const char *body, Py_ssize_t n, const char *id);
int fp_store_get(PyObject *store, PyObject *index, const char **cut, Py_ssize_t *cutn, const char **id,
                 Py_ssize_t *start);
PyObject *fp_run_end(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_event_bounds(PyObject *self, PyObject *events);
PyObject *fp_libpq_resolve(PyObject *self, PyObject *unused);     /* fastpg_libpq.c */
PyObject *fp_libpq_facts(PyObject *self, PyObject *ptr);
int fp_libpq_copy(void *conn, PyObject **frame);
int fp_libpq_copy_raw(void *conn, char **buf);
void fp_libpq_free(char *buf);
int fp_libpq_ready(void);
/* fastpg_row.c: render_row's work without its bytes object */
int fp_row_cells(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos, PyObject *convs,
                 const unsigned char *kinds, Py_ssize_t nkinds, RowHead *head, Cell **cells, Py_ssize_t *ncells,
                 Buf *text, Cell *stack, Py_ssize_t nstack);
/* fastpg_rows.c: the rendered rows and frames of take_rows' changes, in chunks; the index ints */
extern PyTypeObject FpRowChunkType, FpRowArenaType;
int fp_rows_check(PyObject *o);
int fp_rows_rendered(PyObject *chunk, PyObject *index, const char **p, Py_ssize_t *n);
int fp_arena_check(PyObject *o);
int fp_arena_add(PyObject *arena, const RowHead *head, const Cell *cells, Py_ssize_t ncells, const Buf *text,
                 const char *frame, Py_ssize_t framelen, PyObject **chunk, PyObject **index);
PyObject *fp_index_int(Py_ssize_t k);

#endif
