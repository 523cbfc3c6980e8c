/* libpq's PQgetCopyData, called by take_rows itself (fastpg_glue.c) instead of through psycopg's
   get_copy_data, which makes a tuple, a memoryview and its buffer object per row message that take_rows
   then copies into bytes (~5% of the capture process's CPU on the drain).

   The library is the one psycopg already loaded (its bundled libpq for psycopg-binary, the system's for
   psycopg-c or the ctypes implementation): this extension does not link libpq. libpq_resolve() looks for
   PQgetCopyData in every object loaded in the process and accepts it only when exactly one definition
   exists, then takes the other functions from that same object. fastpath.copy_reader() then checks them
   against psycopg on the open connection (library version, backend pid, socket, server version) before
   using psycopg's public `PGconn.pgconn_ptr` with them; anything that does not agree, or a platform
   without dl_iterate_phdr, keeps psycopg's get_copy_data. */

#define _GNU_SOURCE
#include "fastpg.h"

#if defined(__linux__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#define HAVE_DL_ITERATE 1
#include <dlfcn.h>
#include <link.h>
#endif

typedef int (*copy_fn)(void *conn, char **buffer, int async);
typedef void (*free_fn)(void *p);
typedef int (*conn_int_fn)(const void *conn);
typedef int (*lib_int_fn)(void);

static copy_fn pq_getcopy = NULL;
static free_fn pq_freemem = NULL;
static conn_int_fn pq_backend_pid = NULL, pq_socket = NULL, pq_server_version = NULL;
static lib_int_fn pq_lib_version = NULL;

#ifdef HAVE_DL_ITERATE
typedef struct {
    int found;                 /* distinct definitions of PQgetCopyData seen */
    void *fn;
    char path[4096];
} Search;

static int each_object(struct dl_phdr_info *info, size_t size, void *data) {
    Search *s = data;
    (void)size;
    if (info->dlpi_name == NULL || info->dlpi_name[0] == 0) return 0;
    void *h = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);     /* loaded already, or nothing */
    if (h == NULL) return 0;
    void *fn = dlsym(h, "PQgetCopyData");
    Dl_info where;
    if (fn != NULL && fn != s->fn && dladdr(fn, &where) && where.dli_fname != NULL) {
        s->found++;
        s->fn = fn;
        snprintf(s->path, sizeof s->path, "%s", where.dli_fname);
    }
    dlclose(h);
    return 0;
}

/* the symbol `name` of the object at `base`, or NULL if that object does not define it itself */
static void *same_object(void *h, const char *name, void *base) {
    void *fn = dlsym(h, name);
    Dl_info where;
    if (fn == NULL || !dladdr(fn, &where) || where.dli_fbase != base) return NULL;
    return fn;
}
#endif

/* libpq_resolve() -> the path of the libpq found, or None (with the reason as a second item) */
PyObject *fp_libpq_resolve(PyObject *self, PyObject *unused) {
#ifdef HAVE_DL_ITERATE
    if (pq_getcopy != NULL) Py_RETURN_NONE;     /* (resolved once; fastpath caches the answer) */
    Search s = {0, NULL, ""};
    dl_iterate_phdr(each_object, &s);
    if (s.found != 1)
        return Py_BuildValue("(Os)", Py_None, s.found ? "more than one libpq is loaded" : "libpq is not loaded");
    void *h = dlopen(s.path, RTLD_LAZY | RTLD_NOLOAD);      /* kept open: it must never be unloaded */
    Dl_info where;
    if (h == NULL || !dladdr(s.fn, &where))
        return Py_BuildValue("(Os)", Py_None, "libpq cannot be opened again");
    void *base = where.dli_fbase;
    void *fns[6] = {s.fn, same_object(h, "PQfreemem", base), same_object(h, "PQbackendPID", base),
                    same_object(h, "PQsocket", base), same_object(h, "PQserverVersion", base),
                    same_object(h, "PQlibVersion", base)};
    for (int i = 1; i < 6; i++)
        if (fns[i] == NULL) return Py_BuildValue("(Os)", Py_None, "libpq lacks a function it should have");
    pq_freemem = (free_fn)fns[1];
    pq_backend_pid = (conn_int_fn)fns[2];
    pq_socket = (conn_int_fn)fns[3];
    pq_server_version = (conn_int_fn)fns[4];
    pq_lib_version = (lib_int_fn)fns[5];
    pq_getcopy = (copy_fn)fns[0];
    return Py_BuildValue("(ss)", s.path, "");
#else
    return Py_BuildValue("(Os)", Py_None, "this platform has no dl_iterate_phdr");
#endif
}

/* libpq_facts(pgconn_ptr) -> (PQlibVersion(), PQbackendPID, PQsocket, PQserverVersion) of the resolved libpq */
PyObject *fp_libpq_facts(PyObject *self, PyObject *ptr) {
    void *conn = PyLong_AsVoidPtr(ptr);
    if (conn == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "libpq_facts: a null connection");
        return NULL;
    }
    if (pq_getcopy == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libpq_facts: libpq_resolve() did not succeed");
        return NULL;
    }
    return Py_BuildValue("(iiii)", pq_lib_version(), pq_backend_pid(conn), pq_socket(conn), pq_server_version(conn));
}

/* One PQgetCopyData(conn, &buf, 1): its result, and at *frame the message as bytes when it is > 0
   (NULL with an exception set if that fails). -2 is libpq's error (the caller raises psycopg's). */
int fp_libpq_copy(void *conn, PyObject **frame) {
    char *buf = NULL;
    *frame = NULL;
    int n = pq_getcopy(conn, &buf, 1);
    if (n > 0 && buf != NULL) {
        *frame = PyBytes_FromStringAndSize(buf, n);
        pq_freemem(buf);
        if (*frame == NULL) return -3;
    } else if (buf != NULL) {
        pq_freemem(buf);
    }
    return n;
}

/* One PQgetCopyData(conn, &buf, 1) as it is: *buf, when the result is > 0, is libpq's copy of the message,
   which the caller frees with fp_libpq_free (take_rows copies a row's frame into its RowChunk from it) */
int fp_libpq_copy_raw(void *conn, char **buf) {
    *buf = NULL;
    int n = pq_getcopy(conn, buf, 1);
    if (n <= 0 && *buf != NULL) {
        pq_freemem(*buf);
        *buf = NULL;
    }
    return n;
}

void fp_libpq_free(char *buf) { if (buf != NULL) pq_freemem(buf); }

int fp_libpq_ready(void) { return pq_getcopy != NULL; }
