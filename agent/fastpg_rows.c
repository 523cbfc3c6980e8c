/* RowArena and RowChunk: where take_rows keeps the rendered rows and the frames of the RenderedRowChanges it
   makes, instead of two bytes objects per change (docs/performance.md, "capture process: fifth pass").

   Each change's `rendered` and `_message` slots hold its chunk and `_at` its index in it; its `rendered`
   property gives render_row's bytes back (chunk.rendered(k)), and its row images are decoded from
   chunk.frame(k), so Python sees what it saw before. render_events reads the rendered row in place.
   Both bytes objects were over pymalloc's 512 bytes: a libc malloc and free each, and two cold objects to
   free a whole batch later. A chunk holds up to CHUNK_ROWS rows or about CHUNK_BYTES; the arena (one per
   source connection) starts the next one when the current one is full. A chunk lives as long as one of its
   changes (or the arena) does; the buffers of a freed chunk are kept for the next one (up to SPARES sets),
   so the batch after does not fault fresh memory in again.

   The indexes are ints kept for the process (fp_index_int): the ones past 256 were an int object per change,
   and per event in a BodyStore (fastpg_store.c). */

#include "fastpg.h"

#define CHUNK_ROWS 1024
#define CHUNK_BYTES ((Py_ssize_t)1 << 20)       /* a chunk takes no row more once it holds this much */
#define SPARES 8
#define SPARE_MAX ((Py_ssize_t)8 << 20)         /* a larger buffer (huge rows) is not kept */

typedef struct {
    PyObject_HEAD
    char *buf;
    Py_ssize_t n, cap;
    Py_ssize_t *starts;     /* row k: rendered buf[starts[2k] : starts[2k+1]], frame [starts[2k+1] : starts[2k+2]] */
    Py_ssize_t count;
} RowChunk;

typedef struct {
    PyObject_HEAD
    RowChunk *cur;          /* the chunk rows go into (NULL: none yet) */
} RowArena;

static struct { char *buf; Py_ssize_t cap; Py_ssize_t *starts; } spares[SPARES];
static int nspares = 0;

/* ---------------------------------------------------------------- the index ints */

#define INDEX_INTS 8192
static PyObject *index_ints[INDEX_INTS];

PyObject *fp_index_int(Py_ssize_t k) {
    if (k < 0 || k >= INDEX_INTS) return PyLong_FromSsize_t(k);
    if (index_ints[k] == NULL && (index_ints[k] = PyLong_FromSsize_t(k)) == NULL) return NULL;
    return Py_NewRef(index_ints[k]);
}

/* ---------------------------------------------------------------- RowChunk */

static RowChunk *chunk_new(void) {
    RowChunk *c = PyObject_New(RowChunk, &FpRowChunkType);
    if (c == NULL) return NULL;
    c->n = c->count = 0;
    if (nspares > 0) {
        nspares--;
        c->buf = spares[nspares].buf, c->cap = spares[nspares].cap, c->starts = spares[nspares].starts;
    } else {
        c->cap = CHUNK_BYTES + (CHUNK_BYTES >> 2);
        c->buf = PyMem_Malloc((size_t)c->cap);
        c->starts = PyMem_Malloc(sizeof(Py_ssize_t) * (2 * CHUNK_ROWS + 1));
        if (c->buf == NULL || c->starts == NULL) {
            PyMem_Free(c->buf);
            PyMem_Free(c->starts);
            c->buf = NULL, c->starts = NULL;
            Py_DECREF(c);
            return (RowChunk *)PyErr_NoMemory();
        }
    }
    c->starts[0] = 0;
    return c;
}

static void chunk_dealloc(RowChunk *c) {
    if (c->buf != NULL && c->starts != NULL && nspares < SPARES && c->cap <= SPARE_MAX) {
        spares[nspares].buf = c->buf, spares[nspares].cap = c->cap, spares[nspares].starts = c->starts;
        nspares++;
    } else {
        PyMem_Free(c->buf);
        PyMem_Free(c->starts);
    }
    PyObject_Free(c);
}

static int chunk_full(RowChunk *c) { return c->count >= CHUNK_ROWS || c->n >= CHUNK_BYTES; }

/* row k's rendered row (which = 0) or frame (which = 1) */
static int chunk_part(RowChunk *c, PyObject *index, int which, const char **p, Py_ssize_t *n) {
    if (!PyLong_CheckExact(index)) return 0;
    Py_ssize_t k = PyLong_AsSsize_t(index);
    if (k < 0 || k >= c->count) {
        PyErr_Clear();
        return 0;
    }
    *p = c->buf + c->starts[2 * k + which];
    *n = c->starts[2 * k + which + 1] - c->starts[2 * k + which];
    return 1;
}

int fp_rows_check(PyObject *o) { return Py_IS_TYPE(o, &FpRowChunkType); }

int fp_rows_rendered(PyObject *chunk, PyObject *index, const char **p, Py_ssize_t *n) {
    return chunk_part((RowChunk *)chunk, index, 0, p, n);
}

static PyObject *chunk_bytes(RowChunk *c, PyObject *index, int which) {
    const char *p;
    Py_ssize_t n;
    if (!chunk_part(c, index, which, &p, &n)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "RowChunk: no such row");
        return NULL;
    }
    return PyBytes_FromStringAndSize(p, n);
}

static PyObject *chunk_rendered(RowChunk *c, PyObject *index) { return chunk_bytes(c, index, 0); }
static PyObject *chunk_frame(RowChunk *c, PyObject *index) { return chunk_bytes(c, index, 1); }
static Py_ssize_t chunk_len(RowChunk *c) { return c->count; }

static PyMethodDef chunk_methods[] = {
    {"rendered", (PyCFunction)chunk_rendered, METH_O, "rendered(k) -> row k as render_row rendered it, as bytes"},
    {"frame", (PyCFunction)chunk_frame, METH_O, "frame(k) -> row k's XLogData frame, as bytes"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods chunk_seq = {.sq_length = (lenfunc)chunk_len};

PyTypeObject FpRowChunkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._fastpg.RowChunk",
    .tp_basicsize = sizeof(RowChunk),
    .tp_dealloc = (destructor)chunk_dealloc,
    .tp_as_sequence = &chunk_seq,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Rendered rows and frames of RenderedRowChanges take_rows made (agent/fastpg_rows.c)",
    .tp_methods = chunk_methods,
};

/* ---------------------------------------------------------------- RowArena */

int fp_arena_check(PyObject *o) { return Py_IS_TYPE(o, &FpRowArenaType); }

/* the rendered row (head, cells, text, as pack_rendered lays it out) and its frame as the arena's next row:
   *chunk (borrowed) and *index (a new reference) say where; -1 with an exception set on failure */
int fp_arena_add(PyObject *arena, const RowHead *head, const Cell *cells, Py_ssize_t ncells, const Buf *text,
                 const char *frame, Py_ssize_t framelen, PyObject **chunk, PyObject **index) {
    RowArena *a = (RowArena *)arena;
    if (a->cur == NULL || chunk_full(a->cur)) {
        RowChunk *c = chunk_new();
        if (c == NULL) return -1;
        Py_XSETREF(a->cur, c);
    }
    RowChunk *c = a->cur;
    Py_ssize_t cellbytes = (Py_ssize_t)sizeof(Cell) * ncells;
    Py_ssize_t need = (Py_ssize_t)sizeof *head + cellbytes + text->n + framelen;
    if (c->n + need > c->cap) {
        Py_ssize_t cap = c->cap;
        while (cap < c->n + need) cap *= 2;
        char *b = PyMem_Realloc(c->buf, (size_t)cap);
        if (b == NULL) return PyErr_NoMemory(), -1;
        c->buf = b, c->cap = cap;
    }
    char *w = c->buf + c->n;
    memcpy(w, head, sizeof *head);
    memcpy(w + sizeof *head, cells, (size_t)cellbytes);
    memcpy(w + sizeof *head + cellbytes, text->p, (size_t)text->n);
    Py_ssize_t k = c->count;
    c->starts[2 * k + 1] = c->n + need - framelen;
    memcpy(c->buf + c->starts[2 * k + 1], frame, (size_t)framelen);
    c->n += need;
    c->starts[2 * k + 2] = c->n;
    if ((*index = fp_index_int(k)) == NULL) return -1;
    c->count++;
    *chunk = (PyObject *)c;
    return 0;
}

static PyObject *arena_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "RowArena() takes no arguments");
        return NULL;
    }
    RowArena *a = (RowArena *)type->tp_alloc(type, 0);
    if (a != NULL) a->cur = NULL;
    return (PyObject *)a;
}

static void arena_dealloc(RowArena *a) {
    Py_CLEAR(a->cur);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* the chunk rows go into now (None before the first): for tests */
static PyObject *arena_current(RowArena *a, void *unused) {
    return Py_NewRef(a->cur ? (PyObject *)a->cur : Py_None);
}

static PyGetSetDef arena_getset[] = {
    {"current", (getter)arena_current, NULL, "the chunk the next row goes into, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject FpRowArenaType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._fastpg.RowArena",
    .tp_basicsize = sizeof(RowArena),
    .tp_dealloc = (destructor)arena_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Where take_rows keeps its rows, in RowChunks (agent/fastpg_rows.c)",
    .tp_getset = arena_getset,
    .tp_new = arena_new,
};
