/* BodyStore: the event bodies render_events makes for one EventMapper.map call, in one buffer instead of a
   bytes object each (docs/performance.md, "capture process: fourth pass"). Its events are StoredEvents
   (agent/mapping.py), a MappedEvent whose body slot holds the store and `_at` the index; their `body`
   property gives the bytes back (store.body(k)), so Python sees what it saw before. Each body is kept with
   its id cut out, where render_event wrote it (FP_ID_AT bytes in, 32 hex digits: a spool frame cuts the id
   at its first occurrence, and none can start earlier, as byte FP_ID_AT - 1 is a '"'), so that
   pack_events copies a body without searching it for its id, and a frame of consecutive bodies of one
   store is compressed straight from the store's buffer (its buffer protocol, read-only) with no copy.

   Per body ~40 bytes of bookkeeping in C, no Python object: what the body bytes cost before was a libc
   malloc and free (~730 bytes, over pymalloc's 512), a copy into them and one out of them into the frame,
   and the id search. The buffers of a store that is freed are kept for the next one (one set): a fresh
   5 MB per batch would be page faults again (the frame buffer's lesson in spool_frames.FrameCodec). */

#include "fastpg.h"

typedef struct {
    PyObject_HEAD
    char *buf;              /* the bodies, ids cut out, one after the other */
    Py_ssize_t n, cap;
    Py_ssize_t *starts;     /* body k is buf[starts[k] : starts[k + 1]] (starts[count] == n) */
    char *ids;              /* body k's id: ids[32 k : 32 k + 32] */
    Py_ssize_t count, kcap;
    Py_ssize_t exports;     /* buffer views open: no growing meanwhile */
} BodyStore;

/* the buffers of the last store freed (none larger than KEEP_MAX bytes is kept) */
static struct { char *buf; Py_ssize_t cap; Py_ssize_t *starts; char *ids; Py_ssize_t kcap; } spare;
#define KEEP_MAX ((Py_ssize_t)64 << 20)

static PyObject *store_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "BodyStore() takes no arguments");
        return NULL;
    }
    BodyStore *s = (BodyStore *)type->tp_alloc(type, 0);
    if (s == NULL) return NULL;
    if (spare.buf != NULL) {
        s->buf = spare.buf, s->cap = spare.cap, s->starts = spare.starts, s->ids = spare.ids, s->kcap = spare.kcap;
        spare.buf = NULL, spare.starts = NULL, spare.ids = NULL, spare.cap = 0;
    } else {
        s->cap = 1 << 16, s->kcap = 64;
        s->buf = PyMem_Malloc((size_t)s->cap);
        s->starts = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(s->kcap + 1));
        s->ids = PyMem_Malloc(32 * (size_t)s->kcap);
        if (s->buf == NULL || s->starts == NULL || s->ids == NULL) {
            Py_DECREF(s);
            return PyErr_NoMemory();
        }
    }
    s->starts[0] = 0;
    return (PyObject *)s;
}

static void store_dealloc(BodyStore *s) {
    if (s->buf != NULL && s->starts != NULL && s->ids != NULL && s->cap <= KEEP_MAX && s->cap >= spare.cap) {
        PyMem_Free(spare.buf);
        PyMem_Free(spare.starts);
        PyMem_Free(spare.ids);
        spare.buf = s->buf, spare.cap = s->cap, spare.starts = s->starts, spare.ids = s->ids, spare.kcap = s->kcap;
    } else {
        PyMem_Free(s->buf);
        PyMem_Free(s->starts);
        PyMem_Free(s->ids);
    }
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* room for one more body of n bytes (id cut out) */
static int store_room(BodyStore *s, Py_ssize_t n) {
    if (s->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "BodyStore: a view of it is open");
        return -1;
    }
    if (s->n + n > s->cap) {
        Py_ssize_t cap = s->cap;
        while (cap < s->n + n) cap *= 2;
        char *b = PyMem_Realloc(s->buf, (size_t)cap);
        if (b == NULL) return PyErr_NoMemory(), -1;
        s->buf = b, s->cap = cap;
    }
    if (s->count == s->kcap) {
        Py_ssize_t kcap = s->kcap * 2;
        Py_ssize_t *st = PyMem_Realloc(s->starts, sizeof(Py_ssize_t) * (size_t)(kcap + 1));
        if (st == NULL) return PyErr_NoMemory(), -1;
        s->starts = st;
        char *ids = PyMem_Realloc(s->ids, 32 * (size_t)kcap);
        if (ids == NULL) return PyErr_NoMemory(), -1;
        s->ids = ids, s->kcap = kcap;
    }
    return 0;
}

int fp_store_check(PyObject *o) { return Py_IS_TYPE(o, &FpBodyStoreType); }

const char *fp_store_data(PyObject *store) { return ((BodyStore *)store)->buf; }

Py_ssize_t fp_store_add(PyObject *store, const char *body, Py_ssize_t n, const char *id) {
    BodyStore *s = (BodyStore *)store;
    if (n < FP_ID_AT + 32 || memcmp(body + FP_ID_AT, id, 32) != 0) {
        PyErr_SetString(PyExc_SystemError, "BodyStore: the body does not hold its id where render_event puts it");
        return -1;
    }
    if (store_room(s, n - 32) < 0) return -1;
    char *w = s->buf + s->n;
    memcpy(w, body, FP_ID_AT);
    memcpy(w + FP_ID_AT, body + FP_ID_AT + 32, (size_t)(n - FP_ID_AT - 32));
    memcpy(s->ids + 32 * s->count, id, 32);
    s->n += n - 32;
    s->starts[++s->count] = s->n;
    return s->count - 1;
}

int fp_store_get(PyObject *store, PyObject *index, const char **cut, Py_ssize_t *cutn, const char **id,
                 Py_ssize_t *start) {
    BodyStore *s = (BodyStore *)store;
    if (!PyLong_CheckExact(index)) return 0;
    Py_ssize_t k = PyLong_AsSsize_t(index);
    if (k < 0 || k >= s->count) {
        PyErr_Clear();
        return 0;
    }
    *start = s->starts[k];
    *cut = s->buf + s->starts[k];
    *cutn = s->starts[k + 1] - s->starts[k];
    *id = s->ids + 32 * k;
    return 1;
}

/* store.body(k) -> body k as bytes, its id put back */
static PyObject *store_body(BodyStore *s, PyObject *index) {
    const char *cut, *id;
    Py_ssize_t n, start;
    if (!fp_store_get((PyObject *)s, index, &cut, &n, &id, &start)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "BodyStore.body: no such body");
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, n + 32);
    if (b == NULL) return NULL;
    char *w = PyBytes_AS_STRING(b);
    memcpy(w, cut, FP_ID_AT);
    memcpy(w + FP_ID_AT, id, 32);
    memcpy(w + FP_ID_AT + 32, cut + FP_ID_AT, (size_t)(n - FP_ID_AT));
    return b;
}

static Py_ssize_t store_len(BodyStore *s) { return s->count; }

static int store_getbuffer(BodyStore *s, Py_buffer *view, int flags) {
    if (PyBuffer_FillInfo(view, (PyObject *)s, s->buf, s->n, 1, flags) < 0) return -1;
    s->exports++;
    return 0;
}

static void store_releasebuffer(BodyStore *s, Py_buffer *view) { s->exports--; }

static PyMethodDef store_methods[] = {
    {"body", (PyCFunction)store_body, METH_O, "body(k) -> the k-th body, as bytes"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods store_seq = {.sq_length = (lenfunc)store_len};
static PyBufferProcs store_buffer = {(getbufferproc)store_getbuffer, (releasebufferproc)store_releasebuffer};

PyTypeObject FpBodyStoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._fastpg.BodyStore",
    .tp_basicsize = sizeof(BodyStore),
    .tp_dealloc = (destructor)store_dealloc,
    .tp_as_sequence = &store_seq,
    .tp_as_buffer = &store_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The bodies of one EventMapper.map call's compiled events (agent/fastpg_store.c)",
    .tp_methods = store_methods,
    .tp_new = store_new,
};
