/* The text helpers render_row (fastpg_row.c) and render_event (fastpg_event.c) share: the growing buffer,
   JSON strings as orjson writes them, and the strict UTF-8 check. */

#include "fastpg.h"

int buf_grow(Buf *b, Py_ssize_t extra) {
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->n + extra) cap *= 2;
    char *p = b->p == b->small ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->small) memcpy(p, b->small, b->n);
    b->p = p;
    b->cap = cap;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* whether any of the 8 bytes of w is a control (< 0x20), '"' or '\\': the bit tricks of "Bit Twiddling Hacks"
   (hasless, haszero), which may flag more bytes than those but never miss one. Lets json_string pass over
   8 plain bytes at a time (it was 4% of the capture process's CPU byte by byte). */
static inline int special8(uint64_t w) {
    uint64_t lt = (w - ONES * 0x20) & ~w;
    uint64_t q = w ^ (ONES * '"'), bs = w ^ (ONES * '\\');
    return ((lt | ((q - ONES) & ~q) | ((bs - ONES) & ~bs)) & HIGHS) != 0;
}

int json_string(Buf *b, const unsigned char *s, Py_ssize_t n, int *escaped) {
    if (b->n + n + 2 > b->cap && buf_grow(b, n + 2) < 0) return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    Py_ssize_t start = 0;
    int esc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!special8(w)) {
                i += 7;             /* and the loop's i++ */
                continue;
            }
        }
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        esc = 1;
        Py_ssize_t len = i - start;
        b->n = o - b->p;
        if (b->n + len + 8 > b->cap && buf_grow(b, len + 8 + (n - i)) < 0) return -1;
        o = b->p + b->n;
        memcpy(o, s + start, len);
        o += len;
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\t': *o++ = 't'; break;
        case '\n': *o++ = 'n'; break;
        case '\f': *o++ = 'f'; break;
        case '\r': *o++ = 'r'; break;
        default: *o++ = 'u'; *o++ = '0'; *o++ = '0'; *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
        }
        start = i + 1;
    }
    Py_ssize_t len = n - start;
    b->n = o - b->p;
    if (b->n + len + 1 > b->cap && buf_grow(b, len + 1) < 0) return -1;
    o = b->p + b->n;
    memcpy(o, s + start, len);
    o += len;
    *o++ = '"';
    b->n = o - b->p;
    if (escaped) *escaped = esc;
    return 0;
}

int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        int more;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) more = 1;
        else if (c == 0xE0) { more = 2; lo = 0xA0; }
        else if (c == 0xED) { more = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) more = 2;
        else if (c == 0xF0) { more = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) more = 3;
        else if (c == 0xF4) { more = 3; hi = 0x8F; }
        else return 0;
        if (i + more >= n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (int k = 2; k <= more; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += more + 1;
    }
    return 1;
}
