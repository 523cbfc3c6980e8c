/* Event ids four at a time: BLAKE2b-128 (RFC 7693) of four one-block messages at once, one message per
   64-bit lane of AVX2 registers. An id is one BLAKE2b block (agent NUL position NUL type, < 128 bytes), and
   one block's twelve rounds are a chain of dependent steps that the scalar code (fastpg_event.c,
   blake2b16_hex, the reference) cannot spread over the CPU's units; four independent messages side by side
   can. render_events hashes the ids of the next changes this way before it renders their events.
   CPUs without AVX2 and longer messages take the scalar code. */

#include "fastpg.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define B4_AVX2 1
#include <immintrin.h>
#endif

static int avx2_ok = -1;

static void hex16(const uint64_t h0, const uint64_t h1, char out[32]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        uint8_t byte = (uint8_t)((i < 8 ? h0 : h1) >> (8 * (i % 8)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
}

#ifdef B4_AVX2
__attribute__((target("avx2")))
static void blake4_avx2(const uint8_t blocks[4][128], const uint64_t lens[4], char out[4][32]) {
    const __m256i rot24 = _mm256_setr_epi8(3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10,
                                           3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10);
    const __m256i rot16 = _mm256_setr_epi8(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9,
                                           2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9);
    __m256i m[16], v[16];
    for (int j = 0; j < 16; j++) {      /* word j of each block (little-endian, as x86 loads it) */
        uint64_t w[4];
        for (int l = 0; l < 4; l++) memcpy(&w[l], blocks[l] + 8 * j, 8);
        m[j] = _mm256_setr_epi64x((long long)w[0], (long long)w[1], (long long)w[2], (long long)w[3]);
    }
    uint64_t h0 = fp_blake_iv[0] ^ 0x01010000ULL ^ 16;         /* depth 1, fanout 1, no key, digest length 16 */
    for (int i = 0; i < 8; i++) {
        v[i] = _mm256_set1_epi64x((long long)(i == 0 ? h0 : fp_blake_iv[i]));
        v[i + 8] = _mm256_set1_epi64x((long long)fp_blake_iv[i]);
    }
    v[12] = _mm256_xor_si256(v[12], _mm256_setr_epi64x((long long)lens[0], (long long)lens[1],
                                                       (long long)lens[2], (long long)lens[3]));
    v[14] = _mm256_xor_si256(v[14], _mm256_set1_epi64x(-1));         /* the last block */
#define ADD(x, y) _mm256_add_epi64(x, y)
#define XOR(x, y) _mm256_xor_si256(x, y)
#define G4(a, b, c, d, x, y)                                                                           \
    do {                                                                                                \
        v[a] = ADD(ADD(v[a], v[b]), x); v[d] = _mm256_shuffle_epi32(XOR(v[d], v[a]), _MM_SHUFFLE(2, 3, 0, 1)); \
        v[c] = ADD(v[c], v[d]);         v[b] = _mm256_shuffle_epi8(XOR(v[b], v[c]), rot24);            \
        v[a] = ADD(ADD(v[a], v[b]), y); v[d] = _mm256_shuffle_epi8(XOR(v[d], v[a]), rot16);            \
        v[c] = ADD(v[c], v[d]);                                                                         \
        v[b] = XOR(v[b], v[c]); v[b] = _mm256_or_si256(_mm256_srli_epi64(v[b], 63), ADD(v[b], v[b]));  \
    } while (0)
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = fp_blake_sigma[r];
        G4(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G4(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G4(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G4(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G4(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G4(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G4(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G4(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
#undef G4
    uint64_t r0[4], r1[4];
    _mm256_storeu_si256((__m256i *)r0, XOR(_mm256_set1_epi64x((long long)h0), XOR(v[0], v[8])));
    _mm256_storeu_si256((__m256i *)r1, XOR(_mm256_set1_epi64x((long long)fp_blake_iv[1]), XOR(v[1], v[9])));
#undef ADD
#undef XOR
    for (int l = 0; l < 4; l++) hex16(r0[l], r1[l], out[l]);
}
#endif

/* The ids of n (<= 4) messages, each the concatenation of its three parts; out[i] gets message i's 32 hex
   digits. Messages over one block, and all of them without AVX2, take blake2b16_hex one by one. */
void fp_blake2b16_hex4(int n, const uint8_t *const parts[][3], const Py_ssize_t lens[][3], char out[][32]) {
    if (avx2_ok < 0) {
#ifdef B4_AVX2
        __builtin_cpu_init();
        avx2_ok = __builtin_cpu_supports("avx2");
#else
        avx2_ok = 0;
#endif
    }
    int fits = avx2_ok && n >= 2;
    for (int i = 0; i < n && fits; i++)
        fits = lens[i][0] + lens[i][1] + lens[i][2] <= 128;
    if (!fits) {
        for (int i = 0; i < n; i++) fp_blake2b16_hex(parts[i], lens[i], 3, out[i]);
        return;
    }
#ifdef B4_AVX2
    uint8_t blocks[4][128];
    uint64_t total[4] = {0, 0, 0, 0};
    char spare[4][32];
    memset(blocks, 0, sizeof blocks);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            memcpy(blocks[i] + total[i], parts[i][k], (size_t)lens[i][k]);
            total[i] += (uint64_t)lens[i][k];
        }
    blake4_avx2((const uint8_t(*)[128])blocks, total, spare);     /* lanes past n hash the empty message */
    for (int i = 0; i < n; i++) memcpy(out[i], spare[i], 32);
#endif
}

/* blake2b16_many(list of bytes) -> list of ids as blake2b16 gives them, four at a time: the test's door to
   fp_blake2b16_hex4 (tests/test_fastevents.py holds it to hashlib) */
PyObject *fp_blake2b16_many(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "blake2b16_many(a list of bytes)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *res = PyList_New(n);
    if (res == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i += 4) {
        const uint8_t *parts[4][3];
        Py_ssize_t lens[4][3];
        char out[4][32];
        int k = n - i < 4 ? (int)(n - i) : 4;
        for (int j = 0; j < k; j++) {
            PyObject *b = PyList_GET_ITEM(arg, i + j);
            if (!PyBytes_Check(b)) {
                Py_DECREF(res);
                PyErr_SetString(PyExc_TypeError, "blake2b16_many: bytes only");
                return NULL;
            }
            /* split in three pieces as render_events does (prefix, position, suffix) */
            Py_ssize_t len = PyBytes_GET_SIZE(b), a = len / 3, c = len - len / 3;
            const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(b);
            parts[j][0] = p, parts[j][1] = p + a, parts[j][2] = p + c;
            lens[j][0] = a, lens[j][1] = c - a, lens[j][2] = len - c;
        }
        fp_blake2b16_hex4(k, parts, lens, out);
        for (int j = 0; j < k; j++) {
            PyObject *s = PyUnicode_FromStringAndSize(out[j], 32);
            if (s == NULL) {
                Py_DECREF(res);
                return NULL;
            }
            PyList_SET_ITEM(res, i + j, s);
        }
    }
    return res;
}
