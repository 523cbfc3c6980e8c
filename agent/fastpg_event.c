/* render_event: a row rendered by render_row (fastpg_row.c) + one mapping rule's plan -> the CloudEvent body
   agent/mapping.py's EventMapper._event writes for it, byte for byte, and its event id; and BLAKE2b-128
   (RFC 7693, written from the RFC: C has no BLAKE2 in its standard headers) for that id.

   The plan (agent/fastpath.py, event_plan) is a tuple made once per rule and relation:
     0 id_prefix   agent name + NUL (UTF-8)          1 id_suffix  NUL + event type
     2 mid         '","source":<json>,"type":<json>,"subject":'
     3 key_idx     u16 big-endian column index per key column
     4 key_names   JSON names of the key columns     5 col_names  JSON names of all columns
     6 out_idx     u16 column index per field (0xFFFF: not a column), or None for all columns as they are
     7 out_names   JSON names of the fields, or None
     8 changed     one byte per column (1: named by the rule's `changed`), or None
     9 del_keys    u16 column index of each replica identity column (a 'K' delete's old image)
    10 all_outs    the JSON list of the field names (`changed` of inserts and deletes), or None
   Returns (id, subject, body); None when the rule's `changed` skips the change; False when the change needs
   the pure path (a key value the subject would write through Python's str(), a missing key column). */

#include "fastpg.h"

/* ---------------------------------------------------------------- BLAKE2b (RFC 7693), unkeyed */

const uint64_t fp_blake_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

const uint8_t fp_blake_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int n) { return x >> n | x << (64 - n); }

#define G(a, b, c, d, x, y)                                  \
    do {                                                     \
        v[a] = v[a] + v[b] + (x); v[d] = rotr64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y); v[d] = rotr64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 63); \
    } while (0)

static void compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t v[16], m[16];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, 128);                                               /* little-endian words */
#else
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int k = 7; k >= 0; k--) w = w << 8 | block[8 * i + k];
        m[i] = w;
    }
#endif
    for (int i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = fp_blake_iv[i]; }
    v[12] ^= t;                 /* messages here are far below 2**64 bytes: the high counter word stays 0 */
    if (last) v[14] = ~v[14];
    /* fully unrolled, the SIGMA lookups become constant indices (no load of the index, then of the word):
       an id's one block ~30 ns faster; BLAKE2b was ~5% of the capture process */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 12
#elif defined(__clang__)
#pragma clang loop unroll(full)
#endif
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = fp_blake_sigma[r];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2b with a 16-byte digest of the concatenation of up to three pieces, as 32 hex digits in out */
void fp_blake2b16_hex(const uint8_t *const *parts, const Py_ssize_t *lens, int nparts, char out[32]) {
    uint64_t h[8];
    for (int i = 0; i < 8; i++) h[i] = fp_blake_iv[i];
    h[0] ^= 0x01010000ULL ^ 16;              /* depth 1, fanout 1, no key, digest length 16 */
    uint8_t block[128];
    size_t fill = 0;
    uint64_t total = 0;
    for (int p = 0; p < nparts; p++) {
        const uint8_t *s = parts[p];
        Py_ssize_t n = lens[p];
        while (n > 0) {
            if (fill == 128) {               /* a full block is compressed only once more data follows */
                total += 128;
                compress(h, block, total, 0);
                fill = 0;
            }
            size_t take = 128 - fill < (size_t)n ? 128 - fill : (size_t)n;
            memcpy(block + fill, s, take);
            fill += take;
            s += take;
            n -= (Py_ssize_t)take;
        }
    }
    total += fill;
    memset(block + fill, 0, 128 - fill);
    compress(h, block, total, 1);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        uint8_t byte = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
}

PyObject *fp_blake2b16(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *parts[1] = {view.buf};
    Py_ssize_t lens[1] = {view.len};
    char out[32];
    fp_blake2b16_hex(parts, lens, 1, out);
    PyBuffer_Release(&view);
    return PyUnicode_DecodeASCII(out, 32, NULL);
}

/* ---------------------------------------------------------------- the event */

static inline unsigned u16at(const char *p, Py_ssize_t i) {
    return (unsigned)(uint8_t)p[2 * i] << 8 | (uint8_t)p[2 * i + 1];
}

/* what Python compares: the same text is the same value only within one kind of value (json null and SQL
   NULL, the json text "x" and the string x write alike) */
static int tag_class(uint8_t tag) {
    return tag == T_STR_ESC ? T_STR : tag == T_FLOAT_ZERO ? T_FLOAT : tag;
}

static int is_number(uint8_t tag) { return tag == T_INT || tag == T_BOOL || tag == T_FLOAT || tag == T_FLOAT_ZERO; }

/* an int, a bool and a float in one column (a source that types values loosely): equal text is not the test */
static int numbers_apart(const Cell *a, const Cell *b) {
    return is_number(a->tag) && is_number(b->tag) && tag_class(a->tag) != tag_class(b->tag);
}

static int cells_equal(const Cell *a, const Cell *b, const char *text) {
    if (a->tag == T_FLOAT_ZERO && b->tag == T_FLOAT_ZERO) return 1;       /* 0.0 == -0.0 */
    return tag_class(a->tag) == tag_class(b->tag) && a->len == b->len
        && memcmp(text + a->off, text + b->off, a->len) == 0;
}

static int put_cell(Buf *b, const Cell *c, const char *text) { return buf_put(b, text + c->off, c->len); }

/* subject_part (agent/mapping.py) of a key value, raw; 1 when Python's str() would have to say it */
static int subject_part(Buf *s, const Cell *c, const char *text) {
    const char *t = text + c->off;
    switch (c->tag) {
    case T_NULL: return BUF_LIT(s, "\\N");
    case T_INT: case T_BOOL: return buf_put(s, t, c->len);
    case T_STR:
        if (c->len == 2) return BUF_LIT(s, "\\E");
        for (uint32_t i = 1; i + 1 < c->len; i++) {
            if (t[i] == '|' && BUF_LIT(s, "\\") < 0) return -1;
            if (buf_putc(s, t[i]) < 0) return -1;
        }
        return 0;
    default: return 1;
    }
}

/* {"name":value,...} of an image; present[i] says whether column i is in it (NULL: all are) */
static int put_image(Buf *b, const Cell *cells, Py_ssize_t ncols, const uint8_t *present, const char *text,
                     PyObject *col_names, PyObject *out_idx, PyObject *out_names) {
    if (buf_putc(b, '{') < 0) return -1;
    int first = 1;
    if (out_idx == Py_None) {
        for (Py_ssize_t i = 0; i < ncols; i++) {
            if (present && !present[i]) continue;
            if (!first && buf_putc(b, ',') < 0) return -1;
            first = 0;
            PyObject *nm = PyTuple_GET_ITEM(col_names, i);
            if (buf_put(b, PyBytes_AS_STRING(nm), PyBytes_GET_SIZE(nm)) < 0 || buf_putc(b, ':') < 0
                || put_cell(b, &cells[i], text) < 0)
                return -1;
        }
    } else {
        const char *idx = PyBytes_AS_STRING(out_idx);
        Py_ssize_t nf = PyBytes_GET_SIZE(out_idx) / 2;
        for (Py_ssize_t j = 0; j < nf; j++) {
            unsigned i = u16at(idx, j);
            if (i >= (unsigned)ncols || (present && !present[i])) continue;
            if (!first && buf_putc(b, ',') < 0) return -1;
            first = 0;
            PyObject *nm = PyTuple_GET_ITEM(out_names, j);
            if (buf_put(b, PyBytes_AS_STRING(nm), PyBytes_GET_SIZE(nm)) < 0 || buf_putc(b, ':') < 0
                || put_cell(b, &cells[i], text) < 0)
                return -1;
        }
    }
    return buf_putc(b, '}');
}

static int put_str_obj(Buf *b, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) return -1;
    return json_string(b, (const unsigned char *)u, n, NULL);
}

PyObject *fp_render_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 11
        || !PyUnicode_Check(args[2]) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "render_event(row: bytes, plan: tuple, position: str, time: str, txid)");
        return NULL;
    }
    PyObject *made[3];
    int rc = fp_event_parts(args, made);
    if (rc < 0) return NULL;
    if (rc == FP_EVENT_SKIP) Py_RETURN_NONE;
    if (rc == FP_EVENT_PURE) Py_RETURN_FALSE;
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        for (int i = 0; i < 3; i++) Py_DECREF(made[i]);
        return NULL;
    }
    for (int i = 0; i < 3; i++) PyTuple_SET_ITEM(result, i, made[i]);
    return result;
}

/* render_event's work; args as render_event's (checked by the caller). FP_EVENT_MADE: made[] holds new
   references to the id, subject and body; FP_EVENT_SKIP, FP_EVENT_PURE: None and False; -1: an error. */
int fp_event_parts(PyObject *const *args, PyObject **made) {
    return fp_event_parts_id(args, made, NULL, NULL, NULL, 0);
}

/* fp_event_parts with the event's id already hashed (32 hex digits), or NULL to hash it here; the rendered
   row at row[0:rowlen] (a RowChunk's, fastpg_rows.c), or args[0]'s bytes when row is NULL */
int fp_event_parts_id(PyObject *const *args, PyObject **made, const char *given_id, PyObject *store,
                      const char *row, Py_ssize_t rowlen) {
    if (!PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 11) {
        PyErr_SetString(PyExc_TypeError, "render_event: a plan is a tuple of 11");
        return -1;
    }
    if (row == NULL) {
        row = PyBytes_AS_STRING(args[0]);
        rowlen = PyBytes_GET_SIZE(args[0]);
    }
    PyObject *plan = args[1], *txid = args[4];
    PyObject *id_prefix = PyTuple_GET_ITEM(plan, 0), *id_suffix = PyTuple_GET_ITEM(plan, 1);
    PyObject *mid = PyTuple_GET_ITEM(plan, 2), *key_idx = PyTuple_GET_ITEM(plan, 3);
    PyObject *key_names = PyTuple_GET_ITEM(plan, 4), *col_names = PyTuple_GET_ITEM(plan, 5);
    PyObject *out_idx = PyTuple_GET_ITEM(plan, 6), *out_names = PyTuple_GET_ITEM(plan, 7);
    PyObject *changed_mask = PyTuple_GET_ITEM(plan, 8), *del_keys = PyTuple_GET_ITEM(plan, 9);
    PyObject *all_outs = PyTuple_GET_ITEM(plan, 10);

    RowHead head;
    if (rowlen < (Py_ssize_t)sizeof head) goto bad_row;
    memcpy(&head, row, sizeof head);
    Py_ssize_t ncols = head.ncols;
    if (ncols != PyTuple_GET_SIZE(col_names)
        || head.ntuples < 1 || head.ntuples > 2 || (head.op == 'U' && head.old_kind && head.ntuples != 2)
        || rowlen < (Py_ssize_t)(sizeof head + sizeof(Cell) * ncols * head.ntuples))
        goto bad_row;
    /* the cells, and two flags per column, on the stack for usual tables (a malloc per event otherwise) */
    Cell stack_cells[128];
    size_t need = sizeof(Cell) * ncols * head.ntuples + ncols * 2 + 1;
    Cell *cells = need <= sizeof stack_cells ? stack_cells : PyMem_Malloc(need);
    if (cells == NULL) {
        PyErr_NoMemory();
        return -1;
    }
#define FREE_CELLS() do { if (cells != stack_cells) PyMem_Free(cells); } while (0)
    memcpy(cells, row + sizeof head, sizeof(Cell) * ncols * head.ntuples);
    uint8_t *present = (uint8_t *)(cells + ncols * head.ntuples);   /* the before image's columns */
    uint8_t *changed = present + ncols;
    const char *text = row + sizeof head + sizeof(Cell) * ncols * head.ntuples;
    Py_ssize_t textlen = rowlen - (text - row);
    for (Py_ssize_t i = 0; i < ncols * head.ntuples; i++) {
        if ((Py_ssize_t)cells[i].off + (Py_ssize_t)cells[i].len > textlen) {
            FREE_CELLS();
            goto bad_row;
        }
    }

    const Cell *after = NULL, *before = NULL;
    const uint8_t *before_present = NULL;
    const char *opname;
    if (head.op != 'I' && head.op != 'U' && head.op != 'D') {
        FREE_CELLS();
        goto bad_row;
    }
    if (head.op == 'I') {
        opname = "insert";
        after = cells;
    } else if (head.op == 'U') {
        opname = "update";
        after = cells;
        if (head.old_kind == 'O') before = cells + ncols;
    } else {
        opname = "delete";
        before = cells;
        if (head.old_kind == 'K') {
            memset(present, 0, ncols);
            const char *dk = PyBytes_AS_STRING(del_keys);
            for (Py_ssize_t j = 0; j < PyBytes_GET_SIZE(del_keys) / 2; j++) {
                unsigned i = u16at(dk, j);
                if (i < (unsigned)ncols) present[i] = 1;
            }
            before_present = present;
        }
    }
    const Cell *rowimg = after ? after : before;
    const uint8_t *row_present = after ? NULL : before_present;
    int have_changed = head.op == 'U' && before != NULL;
    if (have_changed) {
        int any_named = 0;
        const char *mask = changed_mask != Py_None ? PyBytes_AS_STRING(changed_mask) : NULL;
        for (Py_ssize_t i = 0; i < ncols; i++) {
            if (numbers_apart(&after[i], &before[i])) {       /* 1 == 1.0 == True: Python decides */
                FREE_CELLS();
                return FP_EVENT_PURE;
            }
            changed[i] = !cells_equal(&after[i], &before[i], text);
            if (changed[i] && mask && mask[i]) any_named = 1;
        }
        if (mask && !any_named) {
            FREE_CELLS();
            return FP_EVENT_SKIP;            /* the rule's `changed` columns did not change */
        }
    }

    Buf body, subj;
    buf_init(&body);
    buf_init(&subj);
    int result = -1;
    int fallback = 0;
    /* the key's cells, and the subject */
    const char *kidx = PyBytes_AS_STRING(key_idx);
    Py_ssize_t nkeys = PyBytes_GET_SIZE(key_idx) / 2;
    for (Py_ssize_t j = 0; j < nkeys && !fallback; j++) {
        unsigned i = u16at(kidx, j);
        if (i >= (unsigned)ncols || (row_present && !row_present[i])) { fallback = 1; break; }
        if (j && buf_putc(&subj, '|') < 0) goto error;
        int rc = subject_part(&subj, &rowimg[i], text);
        if (rc < 0) goto error;
        if (rc) fallback = 1;
    }
    if (fallback) goto pure;

    /* the id: blake2b of agent NUL position NUL type */
    Py_ssize_t poslen;
    const char *pos = PyUnicode_AsUTF8AndSize(args[2], &poslen);
    if (pos == NULL) goto error;
    const uint8_t *parts[3] = {(const uint8_t *)PyBytes_AS_STRING(id_prefix), (const uint8_t *)pos,
                               (const uint8_t *)PyBytes_AS_STRING(id_suffix)};
    Py_ssize_t lens[3] = {PyBytes_GET_SIZE(id_prefix), poslen, PyBytes_GET_SIZE(id_suffix)};
    char eid[32];
    if (given_id != NULL)
        memcpy(eid, given_id, 32);           /* render_events hashed it already (fastpg_blake4.c) */
    else
        fp_blake2b16_hex(parts, lens, 3, eid);

    if (BUF_LIT(&body, "{\"specversion\":\"1.0\",\"id\":\"") < 0 || buf_put(&body, eid, 32) < 0
        || buf_put(&body, PyBytes_AS_STRING(mid), PyBytes_GET_SIZE(mid)) < 0
        || json_string(&body, (const unsigned char *)subj.p, subj.n, NULL) < 0
        || BUF_LIT(&body, ",\"time\":") < 0 || put_str_obj(&body, args[3]) < 0
        || BUF_LIT(&body, ",\"datacontenttype\":\"application/json\",\"position\":") < 0
        || json_string(&body, (const unsigned char *)pos, poslen, NULL) < 0 || BUF_LIT(&body, ",\"txid\":") < 0)
        goto error;
    if (txid == Py_None ? BUF_LIT(&body, "null") < 0
                        : (!PyUnicode_Check(txid) ? (fallback = 1) : put_str_obj(&body, txid) < 0))
        goto error;
    if (fallback) goto pure;
    if (BUF_LIT(&body, ",\"data\":{\"op\":\"") < 0 || buf_put(&body, opname, (Py_ssize_t)strlen(opname)) < 0
        || BUF_LIT(&body, "\",\"key\":{") < 0)
        goto error;
    for (Py_ssize_t j = 0; j < nkeys; j++) {
        PyObject *nm = PyTuple_GET_ITEM(key_names, j);
        if ((j && buf_putc(&body, ',') < 0) || buf_put(&body, PyBytes_AS_STRING(nm), PyBytes_GET_SIZE(nm)) < 0
            || buf_putc(&body, ':') < 0 || put_cell(&body, &rowimg[u16at(kidx, j)], text) < 0)
            goto error;
    }
    if (BUF_LIT(&body, "},\"before\":") < 0) goto error;
    if (before ? put_image(&body, before, ncols, before_present, text, col_names, out_idx, out_names) < 0
               : BUF_LIT(&body, "null") < 0)
        goto error;
    if (BUF_LIT(&body, ",\"after\":") < 0) goto error;
    if (after ? put_image(&body, after, ncols, NULL, text, col_names, out_idx, out_names) < 0
              : BUF_LIT(&body, "null") < 0)
        goto error;
    if (BUF_LIT(&body, ",\"changed\":") < 0) goto error;
    if (head.op == 'U' && !have_changed) {
        if (BUF_LIT(&body, "null") < 0) goto error;     /* no old image: which columns changed is unknown */
    } else if (head.op != 'U' && all_outs != Py_None) {
        if (buf_put(&body, PyBytes_AS_STRING(all_outs), PyBytes_GET_SIZE(all_outs)) < 0) goto error;
    } else {
        if (buf_putc(&body, '[') < 0) goto error;
        int first = 1;
        if (out_idx == Py_None || head.op != 'U') {      /* column names in column order */
            for (Py_ssize_t i = 0; i < ncols; i++) {
                if (have_changed ? !changed[i] : (row_present && !row_present[i])) continue;
                PyObject *nm = PyTuple_GET_ITEM(col_names, i);
                if ((!first && buf_putc(&body, ',') < 0) || buf_put(&body, PyBytes_AS_STRING(nm), PyBytes_GET_SIZE(nm)) < 0)
                    goto error;
                first = 0;
            }
        } else {                                          /* the fields whose column changed */
            const char *idx = PyBytes_AS_STRING(out_idx);
            for (Py_ssize_t j = 0; j < PyBytes_GET_SIZE(out_idx) / 2; j++) {
                unsigned i = u16at(idx, j);
                if (i >= (unsigned)ncols || !changed[i]) continue;
                PyObject *nm = PyTuple_GET_ITEM(out_names, j);
                if ((!first && buf_putc(&body, ',') < 0) || buf_put(&body, PyBytes_AS_STRING(nm), PyBytes_GET_SIZE(nm)) < 0)
                    goto error;
                first = 0;
            }
        }
        if (buf_putc(&body, ']') < 0) goto error;
    }
    if (BUF_LIT(&body, "}}") < 0) goto error;
    made[0] = fp_ascii(eid, 32);
    made[1] = PyUnicode_DecodeUTF8(subj.p, subj.n, NULL);
    if (store == NULL) {
        made[2] = PyBytes_FromStringAndSize(body.p, body.n);
    } else {                                /* (its index, no bytes object: fastpg_store.c) */
        Py_ssize_t k = made[0] && made[1] ? fp_store_add(store, body.p, body.n, eid) : -1;
        made[2] = k >= 0 ? fp_index_int(k) : NULL;     /* (kept ints: fastpg_rows.c) */
    }
    if (made[0] && made[1] && made[2]) {
        result = FP_EVENT_MADE;
    } else {
        for (int i = 0; i < 3; i++) Py_XDECREF(made[i]);
    }
    goto done;
pure:
    result = FP_EVENT_PURE;
    goto done;
error:
    result = -1;
done:
    buf_free(&body);
    buf_free(&subj);
    FREE_CELLS();
    return result;
#undef FREE_CELLS
bad_row:
    PyErr_SetString(PyExc_ValueError, "render_event: not a row from render_row");
    return -1;
}
