/* hostd._scan: one pass over a long JSON-RPC line, without the GIL (hostd/rpc/scan.py).
 *
 * scan(line, top_names, params_index, param_names, max_members, big_min, max_elems) validates the
 * whole line as one JSON text and reports where the members that matter are, so that hostd can
 * hand msgspec a small line instead of 16 MiB it would hold the event loop to read. It runs in a
 * worker thread with the GIL released: the only Python objects are made after the walk.
 *
 * What it accepts is what msgspec accepts while skipping a value (it must never accept what
 * msgspec would refuse; refusing more only sends the line the usual way):
 *   - RFC 8259 syntax: numbers without leading zeros or a bare dot, the three literals,
 *     strings without control characters, the eight escapes and \uXXXX with surrogates paired;
 *   - bytes >= 0x80 in string values are not checked (msgspec does not check them either);
 *     keys of envelope objects and of params are checked as strict UTF-8 (msgspec reads those
 *     keys as str on some paths, and refuses what is not UTF-8).
 *
 * An envelope object is the line itself when it is an object, or each element object of a
 * batch (a top-level array). The result is (kind, max_depth, top, params, elems, n_elems):
 *   kind       0: an object, 1: a scalar, 5: an array (a batch), 2: more matches than
 *              max_members, 3: nested deeper than MAX_DEPTH (4096; msgspec refuses about
 *              1,000) before any error, 4: not valid JSON;
 *   max_depth  the deepest nesting (the top-level value is depth 1), before any error;
 *   top        (name_index, key_start, value_start, value_end, element) for every member of an
 *              envelope object whose key is exactly one of top_names, in order, duplicates
 *              included (element: the batch element it is in, 0 in an object line);
 *   params     (key_start, key_end, value_start, value_end, top_ordinal) for every member of an
 *              object-valued envelope member named top_names[params_index] (top_ordinal: the
 *              index of that member in top) whose key, folded as Go's encoding/json folds a key
 *              against ASCII names (ASCII letters upper-cased, U+017F to S, U+212A to K), folds
 *              as one of param_names (the fields' own spellings) does: one record per field and
 *              params object, the member that hostd's Go-style decode takes (keys in
 *              first-occurrence order with their last values; the exact spelling wins, else the
 *              folded spelling met last), in the order of each field's first member, so that a
 *              million spellings of one field cost one record;
 *   elems      (value_start, value_end) of the first max_elems batch elements;
 *   n_elems    how many elements the batch has (every one counted).
 * For kind 4, params lists instead (value_start, value_end) of every value at least big_min
 * bytes long that ended before the error (batch elements, envelope members and params members),
 * so that hostd can blank them out and let msgspec word the error at the same byte offset,
 * reading little. For kinds 2 and 3, top, params and elems are None. Positions are byte offsets
 * into line; key spans include their quotes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 4096 /* past this, msgspec has refused long before: reported as kind 3 */
#define KEY_MAX 64          /* decoded key bytes compared; longer keys match no name */
#define MAX_NAMES 256

typedef struct {
    Py_ssize_t a, b, c, d, e;
} rec;

typedef struct {
    Py_ssize_t ks, ke, vs, ve;
    int set;
} slot;

/* A set of (params object, field, spelling): the folded spellings met so far. */
typedef struct {
    uint64_t *hash; /* 0: empty */
    unsigned char (*key)[KEY_MAX + 2]; /* [0]: length, [1]: field, then the bytes */
    int *pid;
    size_t cap, used;
} seen;

static uint64_t fnv(int pid, int field, const unsigned char *k, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL ^ ((uint64_t)pid << 8) ^ (uint64_t)field;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ULL;
    return h ? h : 1;
}

/* 1 if (pid, field, k) was in the set, 0 if it was added, -1 when out of memory. */
static int seen_add(seen *t, int pid, int field, const unsigned char *k, Py_ssize_t n) {
    if (t->used * 2 >= t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        uint64_t *hash = calloc(cap, sizeof *hash);
        unsigned char(*key)[KEY_MAX + 2] = malloc(cap * sizeof *key);
        int *pids = malloc(cap * sizeof *pids);
        if (hash == NULL || key == NULL || pids == NULL) {
            free(hash);
            free(key);
            free(pids);
            return -1;
        }
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->hash[i]) continue;
            size_t j = t->hash[i] & (cap - 1);
            while (hash[j]) j = (j + 1) & (cap - 1);
            hash[j] = t->hash[i];
            memcpy(key[j], t->key[i], sizeof key[j]);
            pids[j] = t->pid[i];
        }
        free(t->hash);
        free(t->key);
        free(t->pid);
        t->hash = hash;
        t->key = key;
        t->pid = pids;
        t->cap = cap;
    }
    uint64_t h = fnv(pid, field, k, n);
    size_t j = h & (t->cap - 1);
    while (t->hash[j]) {
        if (t->hash[j] == h && t->pid[j] == pid && t->key[j][1] == field && t->key[j][0] == n &&
            memcmp(t->key[j] + 2, k, (size_t)n) == 0)
            return 1;
        j = (j + 1) & (t->cap - 1);
    }
    t->hash[j] = h;
    t->pid[j] = pid;
    t->key[j][0] = (unsigned char)n;
    t->key[j][1] = (unsigned char)field;
    memcpy(t->key[j] + 2, k, (size_t)n);
    t->used++;
    return 0;
}

/* A decoded key folded as Go folds it against ASCII names (0: it can match none). */
static int fold_utf8(const unsigned char *k, Py_ssize_t n, unsigned char *out) {
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        if (k[i] < 0x80) {
            out[o++] = (k[i] >= 'a' && k[i] <= 'z') ? (unsigned char)(k[i] - 32) : k[i];
            i++;
        } else if (n - i >= 2 && k[i] == 0xC5 && k[i + 1] == 0xBF) { /* U+017F */
            out[o++] = 'S';
            i += 2;
        } else if (n - i >= 3 && k[i] == 0xE2 && k[i + 1] == 0x84 && k[i + 2] == 0xAA) { /* U+212A */
            out[o++] = 'K';
            i += 3;
        } else {
            return -1;
        }
    }
    return (int)o;
}

typedef struct {
    rec *v;
    Py_ssize_t n, cap;
} recs;

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    const char *top_names[MAX_NAMES];
    Py_ssize_t top_len[MAX_NAMES];
    int n_top;
    int params_index;
    const char *param_names[MAX_NAMES]; /* field names as spelled (exact keys) */
    Py_ssize_t param_len[MAX_NAMES];
    unsigned char param_folded[MAX_NAMES][KEY_MAX]; /* the same, folded */
    int n_param;
    /* The params object being read: per field name, the member that wins (see winners()). */
    slot exact_w[MAX_NAMES], fold_w[MAX_NAMES];
    unsigned char cand[MAX_NAMES][KEY_MAX]; /* the spelling of fold_w[i] */
    Py_ssize_t cand_len[MAX_NAMES], first_pos[MAX_NAMES];
    int pid;      /* which params object (spellings are remembered per object) */
    seen spellings;
    Py_ssize_t max_members;
    Py_ssize_t big_min, max_elems, n_elems;
    recs top, params, big, elems;
    Py_ssize_t max_depth;
    int too_many;
    int too_deep;
    int oom;
} scanner;

/* Appends x to r: -1 when out of memory; a match past max_members sets too_many instead (the big
 * values of an invalid line are not matches: at most one per big_min bytes, never refused). */
static int push(scanner *s, recs *r, rec x) {
    if (r != &s->big && r != &s->elems && r->n >= s->max_members) {
        s->too_many = 1;
        return 0;
    }
    if (r->n == r->cap) {
        Py_ssize_t cap = r->cap ? r->cap * 2 : 16;
        rec *v = realloc(r->v, (size_t)cap * sizeof(rec));
        if (v == NULL) {
            s->oom = 1;
            return -1;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = x;
    return 0;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const unsigned char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Length of a valid UTF-8 sequence at p (strict: no overlongs, surrogates or > U+10FFFF), or 0. */
static int utf8_len(const unsigned char *p, const unsigned char *e, uint32_t *cp) {
    unsigned char c = p[0];
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        if (e - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(c & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (c < 0xF0) {
        if (e - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        uint32_t v = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        if (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF)) return 0;
        *cp = v;
        return 3;
    }
    if (c < 0xF5) {
        if (e - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        uint32_t v = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
                     ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        if (v < 0x10000 || v > 0x10FFFF) return 0;
        *cp = v;
        return 4;
    }
    return 0;
}

/* Appends code point cp, as UTF-8, to a decoded key (a key longer than KEY_MAX is poisoned:
 * it can match no name). */
static void key_put(unsigned char *key, Py_ssize_t *klen, int *poisoned, uint32_t cp) {
    unsigned char buf[4];
    int n;
    if (cp < 0x80) {
        buf[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        buf[0] = (unsigned char)(0xC0 | (cp >> 6));
        buf[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        buf[0] = (unsigned char)(0xE0 | (cp >> 12));
        buf[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        buf[0] = (unsigned char)(0xF0 | (cp >> 18));
        buf[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        buf[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        buf[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (*klen + n > KEY_MAX) {
        *poisoned = 1;
        return;
    }
    memcpy(key + *klen, buf, (size_t)n);
    *klen += n;
}

/* The string at *pos (its opening quote). Returns 0 and moves *pos past the closing quote, or
 * -1 if invalid. With key != NULL the string is a key: strict UTF-8, decoded into key. */
static int string(scanner *s, Py_ssize_t *pos, int strict, unsigned char *key, Py_ssize_t *klen, int *poisoned) {
    const unsigned char *p = s->p + *pos + 1, *e = s->p + s->n;
    for (;;) {
        /* the common run: plain ASCII bytes of a value, skipped eight at a time where possible */
        if (key == NULL && !strict) {
            while (e - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                /* any byte '"', '\\' or < 0x20 stops the run (bytes >= 0x80 are not checked) */
                uint64_t q = w ^ 0x2222222222222222ULL, b = w ^ 0x5C5C5C5C5C5C5C5CULL;
                uint64_t hit = ((q - 0x0101010101010101ULL) & ~q) | ((b - 0x0101010101010101ULL) & ~b) |
                               ((w - 0x2020202020202020ULL) & ~w);
                if (hit & 0x8080808080808080ULL) break;
                p += 8;
            }
        }
        if (p >= e) return -1;
        unsigned char c = *p;
        if (c == '"') {
            *pos = (p + 1) - s->p;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (e - p < 2) return -1;
            unsigned char x = p[1];
            uint32_t cp;
            switch (x) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u': {
                if (e - p < 6) return -1;
                int u = hex4(p + 2);
                if (u < 0) return -1;
                if (u >= 0xDC00 && u <= 0xDFFF) return -1; /* a low surrogate first */
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (e - p < 12 || p[6] != '\\' || p[7] != 'u') return -1;
                    int l = hex4(p + 8);
                    if (l < 0xDC00 || l > 0xDFFF) return -1;
                    cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)l - 0xDC00);
                    p += 6;
                } else {
                    cp = (uint32_t)u;
                }
                p += 6;
                if (key != NULL) key_put(key, klen, poisoned, cp);
                continue;
            }
            default: return -1;
            }
            p += 2;
            if (key != NULL) key_put(key, klen, poisoned, cp);
            continue;
        }
        if (c >= 0x80 && strict) {
            uint32_t cp;
            int n = utf8_len(p, e, &cp);
            if (n == 0) return -1;
            if (key != NULL) key_put(key, klen, poisoned, cp);
            p += n;
            continue;
        }
        if (key != NULL) key_put(key, klen, poisoned, c);
        p++;
    }
}

static int number(scanner *s, Py_ssize_t *pos) {
    const unsigned char *p = s->p + *pos, *e = s->p + s->n;
    if (p < e && *p == '-') p++;
    if (p >= e) return -1;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9') p++;
    } else {
        return -1;
    }
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return -1;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return -1;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    /* msgspec reads "01" or "1x" as a bad number, not as a number then a bad character: so do we */
    if (p < e && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-'))
        return -1;
    *pos = p - s->p;
    return 0;
}

static Py_ssize_t ws(scanner *s, Py_ssize_t pos) {
    const unsigned char *p = s->p;
    while (pos < s->n && (p[pos] == ' ' || p[pos] == '\t' || p[pos] == '\n' || p[pos] == '\r')) pos++;
    return pos;
}

static int match(const char *const *names, const Py_ssize_t *lens, int count, const unsigned char *key,
                 Py_ssize_t klen) {
    for (int i = 0; i < count; i++)
        if (lens[i] == klen && memcmp(names[i], key, (size_t)klen) == 0) return i;
    return -1;
}

enum { IN_OBJECT = 1, IN_ARRAY = 2 };

static void open_params(scanner *s) {
    s->pid++;
    for (int i = 0; i < s->n_param; i++) {
        s->exact_w[i].set = s->fold_w[i].set = 0;
        s->cand_len[i] = -1;
        s->first_pos[i] = -1;
    }
}

/* The params object just closed: one record per field it names, the member that wins as
 * hostd's Go-style decode picks it (ParamsDecoder.recover: keys in first-occurrence order, each
 * with its last value; an exact key wins, else the folded spelling met last), in the order the
 * decode would meet the field (its first member). */
static int close_params(scanner *s, Py_ssize_t top_ordinal) {
    int order[MAX_NAMES], n = 0;
    for (int i = 0; i < s->n_param; i++) {
        if (!s->exact_w[i].set && !s->fold_w[i].set) continue;
        int j = n++;
        while (j > 0 && s->first_pos[order[j - 1]] > s->first_pos[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (int j = 0; j < n; j++) {
        int i = order[j];
        const slot *w = s->exact_w[i].set ? &s->exact_w[i] : &s->fold_w[i];
        if (push(s, &s->params, (rec){w->ks, w->ke, w->vs, w->ve, top_ordinal}) < 0) return -1;
    }
    return 0;
}

/* A key of the params object being read: which member it is, if it names a field. */
static slot *param_key(scanner *s, const unsigned char *key, Py_ssize_t klen, Py_ssize_t ks, Py_ssize_t ke) {
    unsigned char folded[KEY_MAX];
    int n = fold_utf8(key, klen, folded);
    if (n < 0) return NULL;
    int i;
    for (i = 0; i < s->n_param; i++)
        if (s->param_len[i] == n && memcmp(s->param_folded[i], folded, (size_t)n) == 0) break;
    if (i == s->n_param) return NULL;
    if (s->first_pos[i] < 0) s->first_pos[i] = ks;
    slot *w;
    if (klen == s->param_len[i] && memcmp(key, s->param_names[i], (size_t)klen) == 0) {
        w = &s->exact_w[i];
    } else if (s->cand_len[i] == klen && memcmp(s->cand[i], key, (size_t)klen) == 0) {
        w = &s->fold_w[i];
    } else {
        int had = seen_add(&s->spellings, s->pid, i, key, klen);
        if (had < 0) {
            s->oom = 1;
            return NULL;
        }
        if (had) return NULL; /* an older spelling: a later one wins over it */
        memcpy(s->cand[i], key, (size_t)klen);
        s->cand_len[i] = klen;
        w = &s->fold_w[i];
    }
    w->ks = ks;
    w->ke = ke;
    w->set = 1;
    return w;
}

/* The walk: 0 valid, -1 invalid. Iterative, so no nesting depth can overflow the C stack.
 * Envelope members sit at depth E: 1 in an object line, 2 in each element object of a batch. */
static int walk(scanner *s, int *top_kind) {
    Py_ssize_t cap = 256, depth = 0, pos = ws(s, 0);
    unsigned char *stack = malloc((size_t)cap);
    if (stack == NULL) {
        s->oom = 1;
        return -1;
    }
    Py_ssize_t top_rec = -1;      /* index in s->top of the envelope member whose value is being read */
    slot *param_w = NULL;         /* the winner slot of the params member being read */
    Py_ssize_t params_depth = -1; /* depth inside the params object being read, or -1 */
    Py_ssize_t start_env = 0, start_param = 0, start_elem = 0; /* where the value being read began */
    int result = -1;
    unsigned char first = pos < s->n ? s->p[pos] : 0;
    *top_kind = first == '{' ? 0 : first == '[' ? 5 : 1;
    const Py_ssize_t E = first == '[' ? 2 : 1;
    for (;;) {
        /* a value starts at pos */
        if (pos >= s->n) goto done;
        unsigned char c = s->p[pos];
        if (E == 2 && depth == 1) { /* a batch element */
            start_elem = pos;
            s->n_elems++;
        }
        if (c == '{' || c == '[') {
            if (depth == cap) {
                if (cap >= MAX_DEPTH) {
                    s->too_deep = 1;
                    goto done;
                }
                unsigned char *grown = realloc(stack, (size_t)cap * 2);
                if (grown == NULL) {
                    s->oom = 1;
                    goto done;
                }
                stack = grown;
                cap *= 2;
            }
            if (depth == E && c == '{' && top_rec >= 0 && s->top.v[top_rec].a == s->params_index) {
                params_depth = depth + 1;
                open_params(s);
            }
            stack[depth++] = c == '{' ? IN_OBJECT : IN_ARRAY;
            if (depth > s->max_depth) s->max_depth = depth;
            pos = ws(s, pos + 1);
            if (pos >= s->n) goto done;
            if (s->p[pos] == (c == '{' ? '}' : ']')) goto close; /* empty */
            if (c == '[') continue;
            goto key;
        }
        if (c == '"') {
            if (string(s, &pos, 0, NULL, NULL, NULL) < 0) goto done;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (number(s, &pos) < 0) goto done;
        } else if (c == 't' && s->n - pos >= 4 && memcmp(s->p + pos, "true", 4) == 0) {
            pos += 4;
        } else if (c == 'f' && s->n - pos >= 5 && memcmp(s->p + pos, "false", 5) == 0) {
            pos += 5;
        } else if (c == 'n' && s->n - pos >= 4 && memcmp(s->p + pos, "null", 4) == 0) {
            pos += 4;
        } else {
            goto done;
        }
    after_value:
        /* a value ended at pos, in the container at depth (0: the whole text) */
        if (depth == E && stack[depth - 1] == IN_OBJECT) { /* an envelope member's value */
            if (top_rec >= 0) s->top.v[top_rec].d = pos;
            top_rec = -1;
            if (pos - start_env >= s->big_min && push(s, &s->big, (rec){start_env, pos, 0, 0, 0}) < 0) goto done;
        } else if (depth == E + 1 && params_depth == E + 1) { /* a params member's value */
            if (param_w != NULL) param_w->ve = pos;
            param_w = NULL;
            if (pos - start_param >= s->big_min && push(s, &s->big, (rec){start_param, pos, 0, 0, 0}) < 0)
                goto done;
        } else if (E == 2 && depth == 1) { /* a batch element */
            if (s->elems.n < s->max_elems && push(s, &s->elems, (rec){start_elem, pos, 0, 0, 0}) < 0) goto done;
            if (pos - start_elem >= s->big_min && push(s, &s->big, (rec){start_elem, pos, 0, 0, 0}) < 0) goto done;
        }
        pos = ws(s, pos);
        if (depth == 0) {
            result = pos == s->n ? 0 : -1;
            goto done;
        }
        if (pos >= s->n) goto done;
        c = s->p[pos];
        if (c == (stack[depth - 1] == IN_OBJECT ? '}' : ']')) goto close;
        if (c != ',') goto done;
        pos = ws(s, pos + 1);
        if (stack[depth - 1] == IN_OBJECT) goto key;
        continue;
    close:
        /* the container at depth ends at pos (its closing bracket): it is a value that ended */
        pos++;
        depth--;
        if (params_depth == depth + 1) {
            params_depth = -1;
            if (close_params(s, top_rec) < 0) goto done;
        }
        goto after_value;
    key:
        /* a member's key starts at pos, in the object at depth */
        if (pos >= s->n || s->p[pos] != '"') goto done;
        {
            Py_ssize_t ks = pos;
            int in_params = depth == E + 1 && params_depth == E + 1;
            if (depth == E || in_params) {
                unsigned char key[KEY_MAX];
                Py_ssize_t klen = 0;
                int poisoned = 0;
                if (string(s, &pos, 1, key, &klen, &poisoned) < 0) goto done;
                if (!poisoned) {
                    if (!in_params) {
                        int i = match(s->top_names, s->top_len, s->n_top, key, klen);
                        if (i >= 0) {
                            rec r = {i, ks, 0, 0, E == 2 ? s->n_elems - 1 : 0};
                            if (push(s, &s->top, r) < 0 || s->too_many) goto done;
                            top_rec = s->top.n - 1;
                        }
                    } else {
                        param_w = param_key(s, key, klen, ks, pos);
                        if (s->oom) goto done;
                    }
                }
            } else if (string(s, &pos, 0, NULL, NULL, NULL) < 0) {
                goto done;
            }
        }
        pos = ws(s, pos);
        if (pos >= s->n || s->p[pos] != ':') goto done;
        pos = ws(s, pos + 1);
        if (depth == E) {
            start_env = pos;
            if (top_rec >= 0) s->top.v[top_rec].c = pos;
        } else if (depth == E + 1) {
            start_param = pos;
            if (param_w != NULL) param_w->vs = pos;
        }
        /* the member's value starts at pos: the loop's top reads it */
    }
done:
    free(stack);
    return result;
}

static int names_from(PyObject *tuple, const char **names, Py_ssize_t *lens, int *count) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) > MAX_NAMES) {
        PyErr_SetString(PyExc_TypeError, "names must be a tuple of at most 256 bytes objects");
        return -1;
    }
    *count = (int)PyTuple_GET_SIZE(tuple);
    for (int i = 0; i < *count; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            return -1;
        }
        names[i] = PyBytes_AS_STRING(item);
        lens[i] = PyBytes_GET_SIZE(item);
    }
    return 0;
}

static PyObject *records(const recs *r, int width) {
    PyObject *out = PyTuple_New(r->n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < r->n; i++) {
        const rec *x = &r->v[i];
        PyObject *item = width == 2   ? Py_BuildValue("(nn)", x->a, x->b)
                         : width == 4 ? Py_BuildValue("(nnnn)", x->a, x->b, x->c, x->d)
                                      : Py_BuildValue("(nnnnn)", x->a, x->b, x->c, x->d, x->e);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer line;
    PyObject *top_names, *param_names;
    Py_ssize_t params_index, max_members, big_min, max_elems;
    if (!PyArg_ParseTuple(args, "y*O!nO!nnn", &line, &PyTuple_Type, &top_names, &params_index, &PyTuple_Type,
                          &param_names, &max_members, &big_min, &max_elems))
        return NULL;
    scanner s;
    memset(&s, 0, sizeof s);
    s.p = line.buf;
    s.n = line.len;
    s.params_index = (int)params_index;
    s.max_members = max_members;
    s.big_min = big_min > 0 ? big_min : 1;
    s.max_elems = max_elems;
    PyObject *result = NULL;
    if (names_from(top_names, s.top_names, s.top_len, &s.n_top) < 0 ||
        names_from(param_names, s.param_names, s.param_len, &s.n_param) < 0)
        goto out;
    for (int i = 0; i < s.n_param; i++) {
        if (s.param_len[i] > KEY_MAX || fold_utf8((const unsigned char *)s.param_names[i], s.param_len[i],
                                                  s.param_folded[i]) != s.param_len[i]) {
            PyErr_SetString(PyExc_ValueError, "param_names must be ASCII names of at most 64 bytes");
            goto out;
        }
    }
    int valid, top_kind = 1;
    Py_BEGIN_ALLOW_THREADS valid = walk(&s, &top_kind);
    Py_END_ALLOW_THREADS if (s.oom) {
        PyErr_NoMemory();
        goto out;
    }
    if (s.too_many || s.too_deep) {
        result = Py_BuildValue("(inOOOn)", s.too_many ? 2 : 3, s.max_depth, Py_None, Py_None, Py_None, s.n_elems);
        goto out;
    }
    if (valid < 0) {
        PyObject *big = records(&s.big, 2);
        if (big != NULL) result = Py_BuildValue("(inONOn)", 4, s.max_depth, Py_None, big, Py_None, s.n_elems);
        goto out;
    }
    PyObject *top = records(&s.top, 5);
    PyObject *params = top == NULL ? NULL : records(&s.params, 5);
    PyObject *elems = params == NULL ? NULL : records(&s.elems, 2);
    if (elems != NULL) {
        result = Py_BuildValue("(inNNNn)", top_kind, s.max_depth, top, params, elems, s.n_elems);
    } else {
        Py_XDECREF(top);
        Py_XDECREF(params);
    }
out:
    free(s.top.v);
    free(s.params.v);
    free(s.big.v);
    free(s.elems.v);
    free(s.spellings.hash);
    free(s.spellings.key);
    free(s.spellings.pid);
    PyBuffer_Release(&line);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(line, top_names, params_index, param_names, max_members, big_min, max_elems)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hostd._scan", "One GIL-free pass over a long JSON-RPC line (hostd/rpc/scan.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
