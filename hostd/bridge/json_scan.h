/* A minimal JSON scanner and writer for hostd-bridge.so.
 *
 * It validates a value, finds a key's value span in an object, unescapes a string only where the
 * bridge needs a C string (a method name), and builds lines by copying spans. It never allocates
 * while scanning, never reads outside [p, end), and refuses nesting deeper than JSCAN_MAX_DEPTH.
 * Everything is static inline: this header is included by exactly one translation unit per binary.
 */
#ifndef HOSTD_BRIDGE_JSON_SCAN_H
#define HOSTD_BRIDGE_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSCAN_MAX_DEPTH 512

typedef struct {
    const char *p;
    size_t n;
} jspan;

static inline const char *js_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static inline int js_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* p points at '"'; returns the position after the closing quote, or NULL. */
static inline const char *js_skip_string(const char *p, const char *e) {
    if (p >= e || *p != '"') return NULL;
    p++;
    while (p < e) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            p++;
            if (p >= e) return NULL;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p++;
                break;
            case 'u':
                if (e - p < 5) return NULL;
                for (int i = 1; i <= 4; i++)
                    if (js_hex(p[i]) < 0) return NULL;
                p += 5;
                break;
            default:
                return NULL;
            }
            continue;
        }
        p++;
    }
    return NULL;
}

static inline const char *js_skip_number(const char *p, const char *e) {
    const char *s = p;
    if (p < e && *p == '-') p++;
    if (p >= e) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9') p++;
    } else {
        return NULL;
    }
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p > s ? p : NULL;
}

static inline const char *js_skip_lit(const char *p, const char *e, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(e - p) < n || memcmp(p, lit, n) != 0) return NULL;
    return p + n;
}

/* Validates one value starting at p (no leading whitespace); returns its end or NULL. */
static inline const char *js_skip_value(const char *p, const char *e, int depth) {
    if (p >= e) return NULL;
    switch (*p) {
    case '"':
        return js_skip_string(p, e);
    case 't':
        return js_skip_lit(p, e, "true");
    case 'f':
        return js_skip_lit(p, e, "false");
    case 'n':
        return js_skip_lit(p, e, "null");
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        int obj = *p == '{';
        if (depth >= JSCAN_MAX_DEPTH) return NULL;
        p = js_ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (obj) {
                p = js_skip_string(p, e);
                if (!p) return NULL;
                p = js_ws(p, e);
                if (p >= e || *p != ':') return NULL;
                p = js_ws(p + 1, e);
            }
            p = js_skip_value(p, e, depth + 1);
            if (!p) return NULL;
            p = js_ws(p, e);
            if (p >= e) return NULL;
            if (*p == close) return p + 1;
            if (*p != ',') return NULL;
            p = js_ws(p + 1, e);
        }
    }
    default:
        return js_skip_number(p, e);
    }
}

/* The whole buffer is exactly one JSON value (whitespace around it allowed). */
static inline int js_valid(const char *p, size_t n, jspan *value) {
    const char *e = p + n;
    const char *s = js_ws(p, e);
    const char *q = js_skip_value(s, e, 0);
    if (!q || js_ws(q, e) != e) return 0;
    if (value) {
        value->p = s;
        value->n = (size_t)(q - s);
    }
    return 1;
}

/* Compares a JSON string span (with quotes) to a plain ASCII key without escapes. */
static inline int js_key_eq(const char *s, size_t n, const char *key) {
    size_t k = strlen(key);
    if (n == k + 2 && memcmp(s + 1, key, k) == 0) return 1;
    if (!memchr(s, '\\', n)) return 0;
    /* Escaped key: decode simple escapes only (our keys are ASCII). */
    size_t i = 1, j = 0;
    while (i + 1 < n) {
        char c = s[i];
        if (c == '\\') {
            if (i + 1 >= n - 1) return 0;
            char d = s[i + 1];
            if (d == 'u' && i + 5 < n) {
                int v = (js_hex(s[i + 2]) << 12) | (js_hex(s[i + 3]) << 8) | (js_hex(s[i + 4]) << 4) |
                        js_hex(s[i + 5]);
                if (v <= 0 || v > 0x7f) return 0;
                c = (char)v;
                i += 6;
            } else if (d == '/' || d == '\\' || d == '"') {
                c = d;
                i += 2;
            } else {
                return 0;
            }
        } else {
            i++;
        }
        if (j >= k || key[j] != c) return 0;
        j++;
    }
    return j == k;
}

/* In a validated object span, finds the value of key (the last one when repeated). */
static inline int js_get(jspan obj, const char *key, jspan *out) {
    const char *p = obj.p, *e = obj.p + obj.n;
    int found = 0;
    if (obj.n == 0 || *p != '{') return 0;
    p = js_ws(p + 1, e);
    while (p < e && *p == '"') {
        const char *ks = p;
        const char *ke = js_skip_string(p, e);
        if (!ke) return found;
        p = js_ws(ke, e);
        if (p >= e || *p != ':') return found;
        p = js_ws(p + 1, e);
        const char *vs = p;
        const char *ve = js_skip_value(p, e, 1);
        if (!ve) return found;
        if (js_key_eq(ks, (size_t)(ke - ks), key)) {
            out->p = vs;
            out->n = (size_t)(ve - vs);
            found = 1;
        }
        p = js_ws(ve, e);
        if (p < e && *p == ',') p = js_ws(p + 1, e);
    }
    return found;
}

static inline int js_is_string(jspan v) { return v.n >= 2 && v.p[0] == '"'; }
static inline int js_is_object(jspan v) { return v.n >= 2 && v.p[0] == '{'; }
static inline int js_is_true(jspan v) { return v.n == 4 && memcmp(v.p, "true", 4) == 0; }
static inline int js_is_null(jspan v) { return v.n == 4 && memcmp(v.p, "null", 4) == 0; }
static inline int js_is_number(jspan v) { return v.n > 0 && (v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')); }

/* An unsigned decimal integer (no sign, fraction or exponent) that fits 63 bits. */
static inline int js_u64(jspan v, uint64_t *out) {
    uint64_t x = 0;
    if (v.n == 0 || v.n > 18) return 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return 0;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = x;
    return 1;
}

static inline double js_number(jspan v, double fallback) {
    char tmp[64];
    if (!js_is_number(v) || v.n >= sizeof tmp) return fallback;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = 0;
    char *end = NULL;
    double d = strtod(tmp, &end);
    return end && *end == 0 ? d : fallback;
}

static inline void js_put_utf8(char *o, size_t *j, uint32_t cp) {
    if (cp < 0x80) {
        o[(*j)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*j)++] = (char)(0xc0 | (cp >> 6));
        o[(*j)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        o[(*j)++] = (char)(0xe0 | (cp >> 12));
        o[(*j)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*j)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        o[(*j)++] = (char)(0xf0 | (cp >> 18));
        o[(*j)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[(*j)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*j)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* Unescapes a validated string span into a malloc'd NUL-terminated C string. Refuses NUL. */
static inline char *js_strdup(jspan v) {
    if (!js_is_string(v)) return NULL;
    const char *s = v.p + 1, *e = v.p + v.n - 1;
    char *o = malloc(v.n + 1); /* unescaped text is never longer than its escaped form */
    size_t j = 0;
    if (!o) return NULL;
    while (s < e) {
        if (*s != '\\') {
            o[j++] = *s++;
            continue;
        }
        s++;
        if (s >= e) break;
        char d = *s++;
        switch (d) {
        case 'b': o[j++] = '\b'; break;
        case 'f': o[j++] = '\f'; break;
        case 'n': o[j++] = '\n'; break;
        case 'r': o[j++] = '\r'; break;
        case 't': o[j++] = '\t'; break;
        case 'u': {
            if (e - s < 4) goto bad;
            uint32_t cp = (uint32_t)((js_hex(s[0]) << 12) | (js_hex(s[1]) << 8) | (js_hex(s[2]) << 4) | js_hex(s[3]));
            s += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                uint32_t lo = (uint32_t)((js_hex(s[2]) << 12) | (js_hex(s[3]) << 8) | (js_hex(s[4]) << 4) | js_hex(s[5]));
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    s += 6;
                }
            }
            if (cp == 0) goto bad;
            if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
            js_put_utf8(o, &j, cp);
            break;
        }
        default: o[j++] = d; break;
        }
    }
    o[j] = 0;
    return o;
bad:
    free(o);
    return NULL;
}

/* A growable byte buffer; an allocation failure sets oom and later appends do nothing. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} jbuf;

static inline void jb_put(jbuf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static inline void jb_puts(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }
static inline void jb_span(jbuf *b, jspan v) { jb_put(b, v.p, v.n); }

static inline void jb_u64(jbuf *b, uint64_t v) {
    char tmp[24];
    int i = 23;
    tmp[i] = 0;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    jb_puts(b, tmp + i);
}

/* Appends s (n bytes) as a JSON string literal. */
static inline void jb_str(jbuf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    jb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jb_put(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
        if (c == '"') jb_put(b, "\\\"", 2);
        else if (c == '\\') jb_put(b, "\\\\", 2);
        else if (c == '\n') jb_put(b, "\\n", 2);
        else if (c == '\r') jb_put(b, "\\r", 2);
        else if (c == '\t') jb_put(b, "\\t", 2);
        else jb_put(b, esc, 6);
    }
    jb_put(b, s + run, n - run);
    jb_put(b, "\"", 1);
}

static inline void jb_cstr(jbuf *b, const char *s) { jb_str(b, s, strlen(s)); }

#endif
