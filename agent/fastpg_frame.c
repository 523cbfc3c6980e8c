/* A spool frame's per-event work in one pass (agent/spool_frames.py: _fields_pure is the reference, and
   the property test holds the two to the same output): each event's attributes gathered into the head's
   lists, its id found in its body and cut out, the bodies joined. The id's bytes are the str's own UTF-8
   (no encoded copy); a body is copied once, into the joined bytes, or not at all when the frame's bodies
   lie one after the other in a BodyStore already, ids cut out (fastpg_store.c). */

#include "fastpg.h"

static PyObject *s_id, *s_type, *s_subject, *s_position, *s_commit_ts, *s_body;

/* the first occurrence of needle in hay, as bytes.find; -1 for an empty needle (pack's convention).
   An event's id sits near the start of its body (27 bytes in for the mapper's CloudEvents), after bytes
   that hold hex digits too ("specversion", "1.0", "id"): each such false start of the id's first digit
   cost a memchr and a memcmp call. So the first NEAR starts are tried inline, 8 bytes compared at once;
   past them, memchr as before. */
#define NEAR 64
static Py_ssize_t find_bytes(const char *hay, Py_ssize_t hn, const char *needle, Py_ssize_t nn)
{
    if (nn == 0 || nn > hn)
        return -1;
    const char *p = hay, *last = hay + (hn - nn);
    if (nn >= 8) {
        uint64_t head;
        memcpy(&head, needle, 8);
        const char *near = last - p < NEAR ? last : p + NEAR;
        for (; p <= near; p++) {        /* (p + 8 <= hay + hn: nn >= 8) */
            uint64_t w;
            memcpy(&w, p, 8);
            if (w == head && memcmp(p + 8, needle + 8, (size_t)(nn - 8)) == 0)
                return p - hay;
        }
    }
    while (p <= last) {
        p = memchr(p, needle[0], (size_t)(last - p) + 1);
        if (p == NULL)
            return -1;
        if (memcmp(p, needle, (size_t)nn) == 0)
            return p - hay;
        p++;
    }
    return -1;
}

static int interned(void)
{
    if (s_body)
        return 0;
    s_id = PyUnicode_InternFromString("id");
    s_type = PyUnicode_InternFromString("type");
    s_subject = PyUnicode_InternFromString("subject");
    s_position = PyUnicode_InternFromString("position");
    s_commit_ts = PyUnicode_InternFromString("commit_ts");
    s_body = PyUnicode_InternFromString("body");
    return s_id && s_type && s_subject && s_position && s_commit_ts && s_body ? 0 : -1;
}

/* pack_events(events, into) -> (types, type_of_each, ids, id_offsets, subjects, positions, commit_ts,
   body_lengths, bodies): `bodies` is the joined bodies' size in the bytearray `into` (grown when too small,
   never shrunk: a frame's bodies take ~1 MB, and a fresh buffer of that size each frame costs the process a
   page fault per 4 kB), or, when every event's body is the next one of one BodyStore (fastpg_store.c: the
   usual frame of the mapper's compiled events), a read-only memoryview of them in the store, copied
   nowhere. None when an event is not of the usual kinds (an id that is not a str, a body that is not
   bytes): the caller packs that frame in Python. A store's body has its id cut out already, at FP_ID_AT,
   which is where find would find it (nothing before it can hold 32 hex digits, see fastpg_store.c). */
PyObject *fp_pack_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyByteArray_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "pack_events(events, into): a sequence of events and a bytearray");
        return NULL;
    }
    if (interned() < 0)
        return NULL;
    PyObject *into = args[1];
    PyObject *seq = PySequence_Fast(args[0], "pack_events: a sequence of events");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = NULL, *size = NULL, *prev_type = NULL;
    PyObject *types = PyList_New(0), *tindex = PyDict_New(), *tix = PyList_New(n), *ids = PyList_New(n),
             *offs = PyList_New(n), *subjects = PyList_New(n), *positions = PyList_New(n), *ts = PyList_New(n),
             *lens = PyList_New(n);
    /* bodies[i]: event i's bytes, or its BodyStore (held); its bytes are bodies[i]'s from src_at[i], src_n[i]
       long, cut at cut_at[i] (-1: copied whole) */
    PyObject **bodies = PyMem_Calloc((size_t)n + 1, sizeof *bodies);
    Py_ssize_t *cut_at = PyMem_Calloc((size_t)n + 1, sizeof *cut_at), *cut_len = PyMem_Calloc((size_t)n + 1,
                                                                                              sizeof *cut_len);
    Py_ssize_t *src_at = PyMem_Calloc((size_t)n + 1, sizeof *src_at), *src_n = PyMem_Calloc((size_t)n + 1,
                                                                                            sizeof *src_n);
    Py_ssize_t total = 0, prev_index = 0;
    PyObject *run = NULL;               /* the store all bodies so far are consecutive in, from run_at */
    Py_ssize_t run_at = 0, run_end = 0;
    int one_run = n > 0;
    if (!types || !tindex || !tix || !ids || !offs || !subjects || !positions || !ts || !lens || !bodies || !cut_at ||
        !cut_len || !src_at || !src_n) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = items[i], *v, *f[7];
        int at_slots = fp_event_fields(e, f);   /* MappedEvent: read at its slots, else as attributes */
#define FIELD(k, name) (at_slots ? Py_NewRef(f[k]) : PyObject_GetAttr(e, name))
        if ((v = FIELD(0, s_id)) == NULL)
            goto done;
        PyList_SET_ITEM(ids, i, v);
        if (!PyUnicode_Check(v)) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        Py_ssize_t idn, off, bn;
        const char *idp = PyUnicode_AsUTF8AndSize(v, &idn);
        if (idp == NULL)
            goto done;
        const char *cut, *sid;
        if (at_slots && f[6] != NULL && fp_store_check(f[5]) &&
            fp_store_get(f[5], f[6], &cut, &bn, &sid, &src_at[i]) && idn == 32 && memcmp(idp, sid, 32) == 0) {
            bodies[i] = Py_NewRef(f[5]);
            src_n[i] = bn;
            cut_at[i] = -1;
            off = FP_ID_AT;
            if (one_run && (run == NULL ? i == 0 : run == f[5] && src_at[i] == run_end)) {
                if (run == NULL)
                    run = f[5], run_at = src_at[i];
                run_end = src_at[i] + bn;
            } else {
                one_run = 0;
            }
        } else {
            one_run = 0;
            src_at[i] = 0;
            /* (a store's body whose event's id was changed: as bytes, through the `body` property) */
            bodies[i] = at_slots && f[6] == NULL ? Py_NewRef(f[5]) : PyObject_GetAttr(e, s_body);
            if (bodies[i] == NULL)
                goto done;
            if (!PyBytes_CheckExact(bodies[i])) {
                out = Py_NewRef(Py_None);
                goto done;
            }
            bn = PyBytes_GET_SIZE(bodies[i]);
            src_n[i] = bn;
            off = find_bytes(PyBytes_AS_STRING(bodies[i]), bn, idp, idn);
            cut_at[i] = off;
            cut_len[i] = off >= 0 ? idn : 0;
            bn -= cut_len[i];
        }
        total += bn;
        if ((v = PyLong_FromSsize_t(off)) == NULL)
            goto done;
        PyList_SET_ITEM(offs, i, v);
        if ((v = PyLong_FromSsize_t(bn)) == NULL)
            goto done;
        PyList_SET_ITEM(lens, i, v);

        PyObject *t = FIELD(1, s_type);
        if (t == NULL)
            goto done;
        Py_ssize_t index;
        if (prev_type != NULL && t == prev_type) {   /* the same object as the last event's: the usual case */
            index = prev_index;
        } else {
            PyObject *known = PyDict_GetItemWithError(tindex, t);
            if (known != NULL) {
                index = PyLong_AsSsize_t(known);
            } else if (PyErr_Occurred()) {
                Py_DECREF(t);
                goto done;
            } else {
                index = PyList_GET_SIZE(types);
                PyObject *k = PyLong_FromSsize_t(index);
                int bad = k == NULL || PyDict_SetItem(tindex, t, k) < 0 || PyList_Append(types, t) < 0;
                Py_XDECREF(k);
                if (bad) {
                    Py_DECREF(t);
                    goto done;
                }
            }
            Py_INCREF(t);
            Py_XSETREF(prev_type, t);  /* held: an attribute made on each access could reuse its address */
            prev_index = index;
        }
        Py_DECREF(t);
        if ((v = PyLong_FromSsize_t(index)) == NULL)
            goto done;
        PyList_SET_ITEM(tix, i, v);
        if ((v = FIELD(2, s_subject)) == NULL)
            goto done;
        PyList_SET_ITEM(subjects, i, v);
        if ((v = FIELD(3, s_position)) == NULL)
            goto done;
        PyList_SET_ITEM(positions, i, v);
        if ((v = FIELD(4, s_commit_ts)) == NULL)
            goto done;
        PyList_SET_ITEM(ts, i, v);
#undef FIELD
    }
    if (one_run) {                      /* the bodies as they lie in the store */
        PyObject *view = PyMemoryView_FromObject(run);
        if (view == NULL)
            goto done;
        size = PySequence_GetSlice(view, run_at, run_end);
        Py_DECREF(view);
        if (size == NULL)
            goto done;
    } else {
        if (PyByteArray_GET_SIZE(into) < total && PyByteArray_Resize(into, total) < 0)
            goto done;
        if ((size = PyLong_FromSsize_t(total)) == NULL)
            goto done;
        char *w = PyByteArray_AS_STRING(into);
        for (Py_ssize_t i = 0; i < n; i++) {
            /* (a store's buffer read only now: attribute lookups above could have run Python) */
            const char *b = (PyBytes_CheckExact(bodies[i]) ? PyBytes_AS_STRING(bodies[i]) : fp_store_data(bodies[i]))
                            + src_at[i];
            Py_ssize_t bn = src_n[i];
            if (cut_at[i] < 0) {
                memcpy(w, b, (size_t)bn);
                w += bn;
            } else {
                memcpy(w, b, (size_t)cut_at[i]);
                w += cut_at[i];
                Py_ssize_t rest = cut_at[i] + cut_len[i];
                memcpy(w, b + rest, (size_t)(bn - rest));
                w += bn - rest;
            }
        }
    }
    PyObject *each = tix;
    if (PyList_GET_SIZE(types) == 1)
        each = PyLong_FromLong(0);         /* one type: 0 stands for the list of zeros */
    else
        Py_INCREF(each);
    if (each != NULL)
        out = PyTuple_Pack(9, types, each, ids, offs, subjects, positions, ts, lens, size);
    Py_XDECREF(each);
done:
    if (bodies != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(bodies[i]);
    PyMem_Free(bodies);
    PyMem_Free(cut_at);
    PyMem_Free(cut_len);
    PyMem_Free(src_at);
    PyMem_Free(src_n);
    Py_XDECREF(size);
    Py_XDECREF(prev_type);
    Py_XDECREF(types);
    Py_XDECREF(tindex);
    Py_XDECREF(tix);
    Py_XDECREF(ids);
    Py_XDECREF(offs);
    Py_XDECREF(subjects);
    Py_XDECREF(positions);
    Py_XDECREF(ts);
    Py_XDECREF(lens);
    Py_DECREF(seq);
    return out;
}

/* The value of a list item that must be an int (exact): -1 with *ok = 0 otherwise. */
static Py_ssize_t int_item(PyObject *list, Py_ssize_t i, int *ok)
{
    PyObject *v = PyList_GET_ITEM(list, i);
    if (!PyLong_CheckExact(v)) {
        *ok = 0;
        return -1;
    }
    Py_ssize_t x = PyLong_AsSsize_t(v);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        *ok = 0;
    }
    return x;
}

/* One pass over a run (payload, starts, offs, ids, lo, hi): with w == NULL, checks it and returns the bytes
   its lines take (-1 when it is not of the usual kinds); with w, writes them there and returns the end. */
static Py_ssize_t run_lines(PyObject *run, char *w, char **end)
{
    if (!PyTuple_CheckExact(run))
        return -1;
    if (PyTuple_GET_SIZE(run) == 5)         /* (payload, head, index, lo, hi): an indexed head (fastpg_head.c) */
        return fp_indexed_lines(run, w, end);
    if (PyTuple_GET_SIZE(run) != 6)
        return -1;
    PyObject *payload = PyTuple_GET_ITEM(run, 0), *starts = PyTuple_GET_ITEM(run, 1),
             *offs = PyTuple_GET_ITEM(run, 2), *ids = PyTuple_GET_ITEM(run, 3);
    if (!PyBytes_CheckExact(payload) || !PyList_CheckExact(starts) || !PyList_CheckExact(offs) ||
        !PyList_CheckExact(ids) || !PyLong_CheckExact(PyTuple_GET_ITEM(run, 4)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(run, 5)))
        return -1;
    Py_ssize_t lo = PyLong_AsSsize_t(PyTuple_GET_ITEM(run, 4)), hi = PyLong_AsSsize_t(PyTuple_GET_ITEM(run, 5));
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (lo < 0 || hi < lo || hi >= PyList_GET_SIZE(starts) || hi > PyList_GET_SIZE(offs) ||
        hi > PyList_GET_SIZE(ids))
        return -1;
    const char *p = PyBytes_AS_STRING(payload);
    Py_ssize_t pn = PyBytes_GET_SIZE(payload), total = 0;
    int ok = 1;
    for (Py_ssize_t i = lo; i < hi; i++) {
        Py_ssize_t a = int_item(starts, i, &ok), b = int_item(starts, i + 1, &ok), off = int_item(offs, i, &ok);
        if (!ok || a < 0 || b < a || b > pn || off > b - a)
            return -1;
        const char *idp = NULL;
        Py_ssize_t idn = 0;
        if (off >= 0) {
            PyObject *eid = PyList_GET_ITEM(ids, i);
            if (!PyUnicode_Check(eid) || (idp = PyUnicode_AsUTF8AndSize(eid, &idn)) == NULL) {
                PyErr_Clear();      /* the pure path raises what .encode() raises */
                return -1;
            }
        }
        if (w == NULL) {
            total += b - a + idn + 1;
            continue;
        }
        w = fp_put_line(w, p + a, b - a, off, idp, idn);
    }
    if (end != NULL)
        *end = w;
    return total;
}

/* join_lines(runs) -> bytes: the JSON lines of runs of frames' events, each run a tuple (payload, starts,
   offs, ids, lo, hi) of a loaded FrameHead's fields, or (payload, head, index, lo, hi) of one read for its
   lines (FrameHead.lines is the reference: each body with its id put back, then a newline), copied once
   into the result; or None when a run is not of the usual kinds (the caller joins them in Python, which
   raises what it raises on a damaged frame). */
PyObject *fp_join_lines(PyObject *self, PyObject *runs)
{
    if (!PyList_CheckExact(runs)) {
        PyErr_SetString(PyExc_TypeError, "join_lines(runs): a list of (payload, starts, offs, ids, lo, hi)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(runs), total = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t size = run_lines(PyList_GET_ITEM(runs, r), NULL, NULL);
        if (size < 0)
            Py_RETURN_NONE;
        total += size;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
    for (Py_ssize_t r = 0; r < n; r++)
        run_lines(PyList_GET_ITEM(runs, r), w, &w);   /* checked above; the lists are not changed in between */
    return out;
}
