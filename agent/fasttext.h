/* Text routines both extensions use (agent._fastpg's row renderer, agent._fastmy's binlog renderer); a header
   of its own because the two extensions link no code with each other. */

#ifndef CDC_FASTTEXT_H
#define CDC_FASTTEXT_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* whether s is UTF-8 that Python's strict decoder accepts (no overlongs, no surrogates, nothing past U+10FFFF) */
static inline int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        /* 8 ASCII bytes at a time (text values are mostly ASCII; byte by byte this was ~1.5% of the
           PostgreSQL capture process's CPU) */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
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

/* v in decimal, at least `width` digits (zero-padded), at o; its length: sprintf's %0*llu without the format
   parsing (snprintf for integers, positions and dates was the renderers' largest single cost) */
static inline int put_udec(char *o, unsigned long long v, int width) {
    char t[24];
    int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    int pad = n < width ? width - n : 0;
    for (int i = 0; i < pad; i++) o[i] = '0';
    for (int i = 0; i < n; i++) o[pad + i] = t[n - 1 - i];
    return pad + n;
}

#endif
