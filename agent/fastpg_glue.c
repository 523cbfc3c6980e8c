/* The glue between the compiled core's parts, in C so that a run of row changes costs no Python per change
   (agent/fastpath.py, docs/performance.md):

   take_rows(get_copy_data, rels, out, max_items, final_lsn, ordinal, time, ts, txid)
       the PostgreSQL source's read loop for the common message: it calls psycopg's get_copy_data(1) itself
       (or, given psycopg's PGconn pointer instead, libpq's PQgetCopyData: fastpg_libpq.c; n is then -2 on
       libpq's error, which the caller raises) and, for each XLogData frame holding an Insert / Update / Delete of a relation in `rels` that
       render_row renders, appends a RenderedRowChange to `out` (position = final_lsn as 16 hex digits ':'
       the next ordinal, 8 digits). It stops at the first frame that is anything else and hands it back, so
       the source's Python handles it as before: (ordinal, n, frame), n as get_copy_data returned it (0:
       nothing buffered, -1: the stream ended; frame None), or (ordinal, 1, None) once `out` holds max_items.
       rels: relid -> (converters, kinds, table, key_columns, layout, load, ops), ops the three op names.
       Given a RowArena (fastpg_rows.c), a change's rendered row and frame go into the arena's current
       RowChunk, not into two bytes objects: its `rendered` and `_message` slots hold the chunk, `_at` the
       index (agent/fastrow.py); without one they hold the bytes and `_at` None.
   render_events(changes, start, rules, out[, store])
       the mapper's loop over a run of RenderedRowChanges of one layout: each rule's event by render_event
       (fastpg_event.c), appended to `out` as MappedEvents; given a BodyStore (fastpg_store.c), as
       StoredEvents, their bodies in it (the body slot holds the store, _at the index), no bytes each.
       rules: (layout, (plan, op bits, type), ...), op bits 1 insert, 2 update, 4 delete. Returns the index
       of the first change it did not map (another layout, another type, a snapshot read, or one a rule
       hands back to the pure path: all of that change's events are then left to Python).

   Both make their objects without running Python: the classes' __slots__ are filled in directly, at the
   offsets of the member descriptors init_glue() was given and checked. And both untrack them from the
   cyclic garbage collector, as CPython does with a dict of atomic values: what they hold (text, bytes,
   numbers, tuples of names, the relation's shared layout and loader, later the row image dicts) never leads
   back to them, and 2 x 5000 tracked objects per batch made the collector cost ~30% of this path. */

#include "fastpg.h"
#include "structmember.h"

enum { RC_TABLE, RC_OP, RC_POSITION, RC_COMMIT_TIME, RC_COMMIT_TS, RC_TXID, RC_KEY_COLUMNS, RC_UNAVAILABLE,
       RC_ID_KEY, RC_TARGET, RC_RENDERED, RC_LAYOUT, RC_LOAD, RC_MESSAGE, RC_LOADED, RC_AT, RC_NSLOTS };
enum { ME_ID, ME_TYPE, ME_SUBJECT, ME_POSITION, ME_COMMIT_TS, ME_BODY, ME_OUTBOX_ROW, ME_ONLY_TARGET, ME_NSLOTS };

/* stored_type: MappedEvent's subclass whose body slot holds a BodyStore, its `_at` slot the index */
static PyTypeObject *change_type = NULL, *event_type = NULL, *stored_type = NULL;
static Py_ssize_t change_off[RC_NSLOTS], event_off[ME_NSLOTS], at_off;
static PyObject *pos25 = NULL;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* the offsets of `descrs` (member descriptors of object slots of `type` or a base) into off[] */
static int slot_offsets(PyTypeObject *type, PyObject *descrs, Py_ssize_t n, Py_ssize_t *off) {
    if (!PyTuple_Check(descrs) || PyTuple_GET_SIZE(descrs) != n) {
        PyErr_Format(PyExc_TypeError, "init_glue: %zd member descriptors expected", n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(descrs, i);
        if (!PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "init_glue: %R is not a slot", d);
            return -1;
        }
        PyMemberDescrObject *md = (PyMemberDescrObject *)d;
        if (md->d_member->type != T_OBJECT_EX || (md->d_member->flags & READONLY)
            || !PyType_IsSubtype(type, PyDescr_TYPE(md))) {
            PyErr_Format(PyExc_TypeError, "init_glue: %R is not an object slot of %R", d, (PyObject *)type);
            return -1;
        }
        off[i] = md->d_member->offset;
    }
    return 0;
}

PyObject *fp_init_glue(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyType_Check(args[0]) || !PyType_Check(args[2]) || !PyType_Check(args[4])
        || ((PyTypeObject *)args[4])->tp_base != (PyTypeObject *)args[2]) {
        PyErr_SetString(PyExc_TypeError,
                        "init_glue(RenderedRowChange, slots, MappedEvent, slots, StoredEvent, (its _at slot,))");
        return NULL;
    }
    Py_ssize_t coff[RC_NSLOTS], eoff[ME_NSLOTS], aoff;   /* (a refused call leaves the glue as it was) */
    if (slot_offsets((PyTypeObject *)args[0], args[1], RC_NSLOTS, coff) < 0
        || slot_offsets((PyTypeObject *)args[2], args[3], ME_NSLOTS, eoff) < 0
        || slot_offsets((PyTypeObject *)args[4], args[5], 1, &aoff) < 0)
        return NULL;
    if (pos25 == NULL && (pos25 = PyLong_FromLong(25)) == NULL) return NULL;
    memcpy(change_off, coff, sizeof coff);
    memcpy(event_off, eoff, sizeof eoff);
    at_off = aoff;
    Py_XSETREF(change_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(args[2]));
    Py_XSETREF(stored_type, (PyTypeObject *)Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

/* A MappedEvent's id, type, subject, position, commit_ts, body and _at (borrowed) into f[7], read at their
   slots' offsets: 1 when `e` is exactly one of the two classes init_glue was given and its slots are set,
   else 0 (the caller reads them as attributes). A StoredEvent's body slot holds the BodyStore of the body
   whose index is _at (fastpg_store.c); a MappedEvent has no _at (f[6] NULL). pack_events' six attribute
   lookups per event were ~4% of the capture process's CPU (the type's method resolution, the member
   descriptor's getter). */
int fp_event_fields(PyObject *e, PyObject **f) {
    if (event_type == NULL) return 0;
    f[6] = NULL;
    if (Py_IS_TYPE(e, stored_type)) {
        if ((f[6] = SLOT(e, at_off)) == NULL) return 0;
    } else if (!Py_IS_TYPE(e, event_type)) {
        return 0;
    }
    static const int which[6] = {ME_ID, ME_TYPE, ME_SUBJECT, ME_POSITION, ME_COMMIT_TS, ME_BODY};
    for (int i = 0; i < 6; i++)
        if ((f[i] = SLOT(e, event_off[which[i]])) == NULL) return 0;
    return 1;
}

static int glue_ready(void) {
    if (change_type == NULL || event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "agent._fastpg.init_glue() was not called");
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- take_rows */

static PyObject *take_result(long long ordinal, Py_ssize_t n, PyObject *frame) {
    PyObject *r = Py_BuildValue("(LnO)", ordinal, n, frame ? frame : Py_None);
    Py_XDECREF(frame);
    return r;
}

PyObject *fp_take_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 9 || nargs > 10 || !PyDict_Check(args[1]) || !PyList_Check(args[2]) || !PyUnicode_Check(args[6])
        || (nargs == 10 && args[9] != Py_None && !fp_arena_check(args[9]))) {
        PyErr_SetString(PyExc_TypeError, "take_rows(get_copy_data, rels: dict, out: list, max_items, final_lsn, "
                                         "ordinal, time, ts, txid[, arena: RowArena | None])");
        return NULL;
    }
    /* given a RowArena, each change's rendered row and frame go into its chunks (fastpg_rows.c) */
    PyObject *arena = nargs == 10 && args[9] != Py_None ? args[9] : NULL;
    if (!glue_ready()) return NULL;
    PyObject *get = args[0], *rels = args[1], *out = args[2];
    void *conn = NULL;          /* an int: libpq's PGconn, read with PQgetCopyData here (fastpg_libpq.c) */
    if (PyLong_Check(get)) {
        if (!fp_libpq_ready()) {
            PyErr_SetString(PyExc_RuntimeError, "take_rows: libpq_resolve() did not succeed");
            return NULL;
        }
        if ((conn = PyLong_AsVoidPtr(get)) == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "take_rows: a null connection");
            return NULL;
        }
    }
    PyObject *time = args[6], *ts = args[7], *txid = args[8];
    Py_ssize_t max_items = PyLong_AsSsize_t(args[3]);
    unsigned long long lsn = PyLong_AsUnsignedLongLong(args[4]);
    long long ordinal = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL) return NULL;
    PyObject *last_relid = NULL, *state = NULL;     /* the relation of the last row */
    uint32_t last = 0;
    PyObject *result = NULL;
    while (PyList_GET_SIZE(out) < max_items) {
        Py_ssize_t n;
        PyObject *frame = NULL;     /* the frame as bytes: psycopg's, or libpq's read without an arena */
        char *raw = NULL;           /* libpq's own copy of it (with an arena: copied into a chunk, not bytes) */
        if (conn != NULL) {
            int r = arena ? fp_libpq_copy_raw(conn, &raw) : fp_libpq_copy(conn, &frame);
            if (r == -3) goto done;
            if (r <= 0) {               /* 0 nothing buffered, -1 the stream ended, -2 libpq's error */
                result = take_result(ordinal, r, NULL);
                goto done;
            }
            n = r;
            goto have_frame;
        }
        PyObject *got = PyObject_CallOneArg(get, one);
        if (got == NULL) goto done;
        if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2) {
            Py_DECREF(got);
            PyErr_SetString(PyExc_TypeError, "get_copy_data did not return (n, data)");
            goto done;
        }
        n = PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0));
        if (n == -1 && PyErr_Occurred()) {
            Py_DECREF(got);
            goto done;
        }
        if (n <= 0) {
            Py_DECREF(got);
            result = take_result(ordinal, n, NULL);
            goto done;
        }
        frame = PyBytes_FromObject(PyTuple_GET_ITEM(got, 1));     /* bytes(data), as poll does */
        Py_DECREF(got);
        if (frame == NULL) goto done;
    have_frame:;
        const unsigned char *b = raw ? (const unsigned char *)raw : (const unsigned char *)PyBytes_AS_STRING(frame);
        Py_ssize_t len = raw ? n : PyBytes_GET_SIZE(frame);
        if (len < 31 || b[0] != 'w' || (b[25] != 'I' && b[25] != 'U' && b[25] != 'D'))
            goto hand_back;
        uint32_t relid = (uint32_t)b[26] << 24 | (uint32_t)b[27] << 16 | (uint32_t)b[28] << 8 | b[29];
        if (state == NULL || relid != last) {
            Py_XDECREF(last_relid);
            last_relid = PyLong_FromUnsignedLong(relid);
            if (last_relid == NULL) goto fail;
            Py_XSETREF(state, Py_XNewRef(PyDict_GetItemWithError(rels, last_relid)));
            last = relid;
            if (state == NULL && PyErr_Occurred()) goto fail;
        }
        if (state == NULL || !PyTuple_Check(state) || PyTuple_GET_SIZE(state) != 7)
            goto hand_back;     /* a relation the source does not render (or unknown) */
        PyObject *convs = PyTuple_GET_ITEM(state, 0), *kinds = PyTuple_GET_ITEM(state, 1);
        if (!PyTuple_Check(convs) || !PyBytes_Check(kinds)) {
            PyErr_SetString(PyExc_TypeError, "take_rows: a relation's converters must be a tuple, its kinds bytes");
            goto fail;
        }
        PyObject *rendered = NULL, *chunk = NULL, *at = NULL;
        const unsigned char kind = b[25];
        if (arena) {                /* render_row's work, the row and its frame into the arena's chunk */
            RowHead head;
            Cell *cells, stack_cells[128];
            Py_ssize_t ncells = 0;
            Buf text;
            int rc = fp_row_cells(b, len, 25, convs, (const unsigned char *)PyBytes_AS_STRING(kinds),
                                  PyBytes_GET_SIZE(kinds), &head, &cells, &ncells, &text, stack_cells, 128);
            if (rc == 0)
                rc = fp_arena_add(arena, &head, cells, ncells, &text, (const char *)b, len, &chunk, &at);
            if (cells != stack_cells) PyMem_Free(cells);
            buf_free(&text);
            if (rc < 0) goto fail;
            if (rc > 0) goto hand_back;         /* the pure path decodes this one */
            fp_libpq_free(raw);     /* (b points into it: read no more of it below) */
            raw = NULL;
            b = NULL;
        } else {
            PyObject *rargs[4] = {frame, pos25, convs, kinds};
            rendered = fp_render_row(NULL, rargs, 4);
            if (rendered == NULL) goto fail;
            if (rendered == Py_None) {
                Py_DECREF(rendered);
                goto hand_back;                 /* the pure path decodes this one */
            }
        }
        PyObject *ops = PyTuple_GET_ITEM(state, 6);
        if (!PyTuple_Check(ops) || PyTuple_GET_SIZE(ops) != 3) {
            Py_XDECREF(rendered);
            Py_XDECREF(at);
            PyErr_SetString(PyExc_TypeError, "take_rows: a relation's ops must be 3 names");
            goto fail;
        }
        PyObject *op = PyTuple_GET_ITEM(ops, kind == 'I' ? 0 : kind == 'U' ? 1 : 2);
        char pos[64];
        int plen;
        if (ordinal >= 0) {                           /* it counts from 0: the other branch is never taken */
            put_hex16(pos, (unsigned long long)lsn);
            pos[16] = ':';
            plen = 17 + put_udec(pos + 17, (unsigned long long)ordinal + 1, 8);
        } else {
            plen = snprintf(pos, sizeof pos, "%016llX:%08lld", lsn, ordinal + 1);
        }
        PyObject *position = fp_ascii(pos, plen);
        PyObject *ch = position ? change_type->tp_alloc(change_type, 0) : NULL;
        if (ch == NULL) {
            Py_XDECREF(position);
            Py_XDECREF(rendered);
            Py_XDECREF(at);
            goto fail;
        }
        ordinal++;
        SLOT(ch, change_off[RC_TABLE]) = Py_NewRef(PyTuple_GET_ITEM(state, 2));
        SLOT(ch, change_off[RC_OP]) = Py_NewRef(op);
        SLOT(ch, change_off[RC_POSITION]) = position;
        SLOT(ch, change_off[RC_COMMIT_TIME]) = Py_NewRef(time);
        SLOT(ch, change_off[RC_COMMIT_TS]) = Py_NewRef(ts);
        SLOT(ch, change_off[RC_TXID]) = Py_NewRef(txid);
        SLOT(ch, change_off[RC_KEY_COLUMNS]) = Py_NewRef(PyTuple_GET_ITEM(state, 3));
        SLOT(ch, change_off[RC_UNAVAILABLE]) = PyTuple_New(0);
        SLOT(ch, change_off[RC_ID_KEY]) = Py_NewRef(Py_None);
        SLOT(ch, change_off[RC_TARGET]) = Py_NewRef(Py_None);
        SLOT(ch, change_off[RC_LAYOUT]) = Py_NewRef(PyTuple_GET_ITEM(state, 4));
        SLOT(ch, change_off[RC_LOAD]) = Py_NewRef(PyTuple_GET_ITEM(state, 5));
        if (chunk) {        /* (both slots hold the chunk, _at the index: agent/fastrow.py) */
            SLOT(ch, change_off[RC_RENDERED]) = Py_NewRef(chunk);
            SLOT(ch, change_off[RC_MESSAGE]) = Py_NewRef(chunk);
            SLOT(ch, change_off[RC_AT]) = at;
            Py_XDECREF(frame);      /* (psycopg's frame: copied into the chunk) */
        } else {
            SLOT(ch, change_off[RC_RENDERED]) = rendered;
            SLOT(ch, change_off[RC_MESSAGE]) = frame;
            SLOT(ch, change_off[RC_AT]) = Py_NewRef(Py_None);
        }
        frame = NULL;
        SLOT(ch, change_off[RC_LOADED]) = Py_NewRef(Py_False);
        PyObject_GC_UnTrack(ch);        /* see the top: nothing it holds can lead back to it */
        int rc = PyList_Append(out, ch);
        Py_DECREF(ch);
        if (rc < 0) goto done;
        continue;
    hand_back:              /* the frame is not for this loop: poll's Python takes it */
        if (frame == NULL) {
            frame = PyBytes_FromStringAndSize((const char *)b, len);
            fp_libpq_free(raw);
            if (frame == NULL) goto done;
        }
        result = take_result(ordinal, n, frame);
        goto done;
    fail:
        Py_XDECREF(frame);
        fp_libpq_free(raw);
        goto done;
    }
    result = take_result(ordinal, 1, NULL);
done:
    Py_XDECREF(last_relid);
    Py_XDECREF(state);
    Py_DECREF(one);
    return result;
}

/* ---------------------------------------------------------------- render_events */

#define MAX_RULES 64

/* The ids of the events of changes[k], changes[k+1] ... (up to four: the run's next changes, while they are
   RenderedRowChanges with a str position) under one rule's plan, hashed at once (fastpg_blake4.c); pos[i]
   holds a reference to the position ids[i] was hashed from. Returns how many; 0 when the plan is not as
   fp_event_parts reads it or a position has no UTF-8 form (fp_event_parts then hashes, or reports, it). */
static int next_ids(PyObject *changes, Py_ssize_t k, PyObject *plan, char ids[4][32], PyObject *pos[4]) {
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 11 || !PyBytes_Check(PyTuple_GET_ITEM(plan, 0))
        || !PyBytes_Check(PyTuple_GET_ITEM(plan, 1)))
        return 0;
    PyObject *prefix = PyTuple_GET_ITEM(plan, 0), *suffix = PyTuple_GET_ITEM(plan, 1);
    const uint8_t *parts[4][3];
    Py_ssize_t lens[4][3];
    int n = 0;
    for (; n < 4 && k + n < PyList_GET_SIZE(changes); n++) {
        PyObject *ch = PyList_GET_ITEM(changes, k + n), *p;
        if (Py_TYPE(ch) != change_type || (p = SLOT(ch, change_off[RC_POSITION])) == NULL || !PyUnicode_Check(p))
            break;
        Py_ssize_t plen;
        const char *u = PyUnicode_AsUTF8AndSize(p, &plen);
        if (u == NULL) {
            PyErr_Clear();
            break;
        }
        parts[n][0] = (const uint8_t *)PyBytes_AS_STRING(prefix), lens[n][0] = PyBytes_GET_SIZE(prefix);
        parts[n][1] = (const uint8_t *)u, lens[n][1] = plen;
        parts[n][2] = (const uint8_t *)PyBytes_AS_STRING(suffix), lens[n][2] = PyBytes_GET_SIZE(suffix);
        pos[n] = Py_NewRef(p);
    }
    if (n > 0) fp_blake2b16_hex4(n, parts, lens, ids);
    return n;
}

PyObject *fp_render_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 4 || nargs > 5 || !PyList_Check(args[0]) || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) < 1
        || PyTuple_GET_SIZE(args[2]) > MAX_RULES + 1 || !PyList_Check(args[3])
        || (nargs == 5 && args[4] != Py_None && !fp_store_check(args[4]))) {
        PyErr_SetString(PyExc_TypeError,
                        "render_events(changes: list, start, rules: tuple, out: list[, store: BodyStore | None])");
        return NULL;
    }
    if (!glue_ready()) return NULL;
    PyObject *changes = args[0], *rules = args[2], *out = args[3];
    PyObject *store = nargs == 5 && args[4] != Py_None ? args[4] : NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    PyObject *layout = PyTuple_GET_ITEM(rules, 0);
    Py_ssize_t nrules = PyTuple_GET_SIZE(rules) - 1;
    long bits[MAX_RULES];
    for (Py_ssize_t r = 0; r < nrules; r++) {
        PyObject *rule = PyTuple_GET_ITEM(rules, r + 1);
        if (!PyTuple_Check(rule) || PyTuple_GET_SIZE(rule) != 3 || !PyTuple_Check(PyTuple_GET_ITEM(rule, 0))
            || !PyLong_Check(PyTuple_GET_ITEM(rule, 1))) {
            PyErr_SetString(PyExc_TypeError, "render_events: a rule is (plan, op bits, type)");
            return NULL;
        }
        bits[r] = PyLong_AsLong(PyTuple_GET_ITEM(rule, 1));
    }
    PyObject *made[MAX_RULES];
    Py_ssize_t k = start < 0 ? 0 : start;
    /* one rule (the usual table): its ids four changes at a time; ids[i] is changes[ids_at + i]'s */
    char ids[4][32];
    PyObject *ids_pos[4] = {NULL, NULL, NULL, NULL};
    Py_ssize_t ids_at = 0;
    int ids_n = 0;
#define DROP_IDS() do { for (int i_ = 0; i_ < ids_n; i_++) Py_CLEAR(ids_pos[i_]); ids_n = 0; } while (0)
    for (; k < PyList_GET_SIZE(changes); k++) {
        PyObject *ch = PyList_GET_ITEM(changes, k);
        if (Py_TYPE(ch) != change_type) break;
        PyObject *rendered = SLOT(ch, change_off[RC_RENDERED]), *position = SLOT(ch, change_off[RC_POSITION]);
        PyObject *time = SLOT(ch, change_off[RC_COMMIT_TIME]), *txid = SLOT(ch, change_off[RC_TXID]);
        PyObject *ts = SLOT(ch, change_off[RC_COMMIT_TS]), *at = SLOT(ch, change_off[RC_AT]);
        if (SLOT(ch, change_off[RC_LAYOUT]) != layout || SLOT(ch, change_off[RC_ID_KEY]) != Py_None
            || SLOT(ch, change_off[RC_TARGET]) != Py_None || rendered == NULL || position == NULL
            || !PyUnicode_Check(position) || time == NULL || !PyUnicode_Check(time) || txid == NULL || ts == NULL)
            break;
        const char *row;            /* the rendered row: its bytes, or its place in a RowChunk (fastpg_rows.c) */
        Py_ssize_t rowlen;
        if (PyBytes_Check(rendered)) {          /* (_at is then None, or unset: the MariaDB source's) */
            row = PyBytes_AS_STRING(rendered);
            rowlen = PyBytes_GET_SIZE(rendered);
        } else if (at == NULL || !fp_rows_check(rendered) || !fp_rows_rendered(rendered, at, &row, &rowlen)) {
            break;
        }
        if (rowlen < 1) break;
        char op = row[0];
        long bit = op == 'I' ? 1 : op == 'U' ? 2 : op == 'D' ? 4 : 0;
        Py_ssize_t nmade = 0;
        int pure = 0;
        for (Py_ssize_t r = 0; r < nrules && !pure; r++) {
            if (!(bits[r] & bit)) continue;
            PyObject *rule = PyTuple_GET_ITEM(rules, r + 1);
            PyObject *eargs[5] = {rendered, PyTuple_GET_ITEM(rule, 0), position, time, txid}, *ev[3];
            const char *given = NULL;
            if (nrules == 1) {
                if (k < ids_at || k >= ids_at + ids_n) {
                    DROP_IDS();
                    ids_at = k;
                    ids_n = next_ids(changes, k, eargs[1], ids, ids_pos);
                }
                if (k - ids_at < ids_n && ids_pos[k - ids_at] == position)  /* (still the position it hashed) */
                    given = ids[k - ids_at];
            }
            int rc = fp_event_parts_id(eargs, ev, given, store, row, rowlen);   /* (render_event, no result tuple) */
            if (rc < 0) goto error;
            if (rc == FP_EVENT_SKIP) continue;      /* the rule's `changed` columns did not change */
            if (rc == FP_EVENT_PURE) {              /* this change goes through the pure path */
                pure = 1;
                break;
            }
            PyObject *me = store ? stored_type->tp_alloc(stored_type, 0) : event_type->tp_alloc(event_type, 0);
            if (me == NULL) {
                for (int i = 0; i < 3; i++) Py_DECREF(ev[i]);
                goto error;
            }
            SLOT(me, event_off[ME_ID]) = ev[0];
            SLOT(me, event_off[ME_TYPE]) = Py_NewRef(PyTuple_GET_ITEM(rule, 2));
            SLOT(me, event_off[ME_SUBJECT]) = ev[1];
            SLOT(me, event_off[ME_POSITION]) = Py_NewRef(position);
            SLOT(me, event_off[ME_COMMIT_TS]) = Py_NewRef(ts);
            SLOT(me, event_off[ME_BODY]) = store ? Py_NewRef(store) : ev[2];
            SLOT(me, event_off[ME_OUTBOX_ROW]) = Py_NewRef(Py_None);
            SLOT(me, event_off[ME_ONLY_TARGET]) = Py_NewRef(Py_None);
            if (store) SLOT(me, at_off) = ev[2];
            PyObject_GC_UnTrack(me);
            made[nmade++] = me;
        }
        if (pure) {
            for (Py_ssize_t i = 0; i < nmade; i++) Py_DECREF(made[i]);
            break;
        }
        for (Py_ssize_t i = 0; i < nmade; i++) {
            int rc = PyList_Append(out, made[i]);
            Py_DECREF(made[i]);
            if (rc < 0) {
                for (Py_ssize_t j = i + 1; j < nmade; j++) Py_DECREF(made[j]);
                DROP_IDS();
                return NULL;
            }
        }
        continue;
    error:
        for (Py_ssize_t i = 0; i < nmade; i++) Py_DECREF(made[i]);
        DROP_IDS();
        return NULL;
    }
    DROP_IDS();
#undef DROP_IDS
    return PyLong_FromSsize_t(k);
}

/* ---------------------------------------------------------------- run_end */

/* run_end(items, start, stop, cls) -> the index of the first of items[start:stop] that is not an instance of
   cls by its type (a subclass counts), else stop: CaptureCore.read takes such a run of changes in one
   extend instead of an isinstance and an append per change. (isinstance's other answer, an object whose
   __class__ claims cls, ends the run here; read's per-item test then takes it alone.) */
PyObject *fp_run_end(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_Check(args[0]) || !PyType_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "run_end(items: list, start, stop, cls: type)");
        return NULL;
    }
    PyObject *items = args[0];
    PyTypeObject *cls = (PyTypeObject *)args[3], *last = NULL;
    Py_ssize_t k = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (k < 0) k = 0;
    if (stop > PyList_GET_SIZE(items)) stop = PyList_GET_SIZE(items);
    for (; k < stop; k++) {
        PyTypeObject *t = Py_TYPE(PyList_GET_ITEM(items, k));
        if (t == last) continue;                /* (runs are mostly of one class) */
        if (t != cls && !PyType_IsSubtype(t, cls)) break;
        last = t;
    }
    return PyLong_FromSsize_t(k < stop ? k : (stop > 0 ? stop : 0));
}

/* ---------------------------------------------------------------- event_bounds */

/* event_bounds(events) -> (min position, max position, min commit_ts, max commit_ts, whether every event's
   only_target equals the first one's), what Spool.append computed with min() and max() over lists made per
   event (agent/spool_frames.py: `bounds` is the reference); None when an event is not exactly the
   MappedEvent class (or StoredEvent), a position not a str or a commit_ts not a float (the caller computes
   them in Python). */
PyObject *fp_event_bounds(PyObject *self, PyObject *events) {
    if (!PyList_Check(events) || event_type == NULL || PyList_GET_SIZE(events) == 0) Py_RETURN_NONE;
    PyObject *lo = NULL, *hi = NULL, *tlo = NULL, *thi = NULL, *target = NULL;
    int same = 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *e = PyList_GET_ITEM(events, i);
        if (!Py_IS_TYPE(e, event_type) && !Py_IS_TYPE(e, stored_type)) Py_RETURN_NONE;
        PyObject *p = SLOT(e, event_off[ME_POSITION]), *t = SLOT(e, event_off[ME_COMMIT_TS]);
        PyObject *only = SLOT(e, event_off[ME_ONLY_TARGET]);
        if (p == NULL || !PyUnicode_CheckExact(p) || t == NULL || !PyFloat_CheckExact(t) || only == NULL)
            Py_RETURN_NONE;
        if (i == 0) {
            lo = hi = p;
            tlo = thi = t;
            target = only;
            continue;
        }
        /* (as min() and max() do: the first of equal ones stays; str order is code point order) */
        if (PyUnicode_Compare(p, lo) < 0) lo = p;
        else if (PyUnicode_Compare(p, hi) > 0) hi = p;
        double v = PyFloat_AS_DOUBLE(t);
        if (v < PyFloat_AS_DOUBLE(tlo)) tlo = t;
        if (v > PyFloat_AS_DOUBLE(thi)) thi = t;
        if (same && only != target) {
            int eq = PyObject_RichCompareBool(only, target, Py_EQ);     /* list.count's test */
            if (eq < 0) return NULL;
            same = eq;
        }
    }
    return Py_BuildValue("(OOOOO)", lo, hi, tlo, thi, same ? Py_True : Py_False);
}
