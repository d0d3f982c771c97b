/* hostd._logline: the log writer's C half (hostd/logs.py) and host.log's written line
 * (hostd/handlers/log.py), so that a written line costs the event loop a few hundred
 * nanoseconds rather than microseconds.
 *
 * Writer(fd, max_queue_bytes, max_lines) queues encoded lines in a buffer that a pthread of its
 * own writes to fd. The thread never takes the GIL: the caller appends under a mutex, the thread
 * swaps the buffer for an empty one, waits BATCH_DELAY_NS for a burst to gather, and writes the
 * batch with write(2). A line that would take the queue past max_queue_bytes or max_lines is
 * dropped (the caller counts it); a write that fails gives up on the rest of its batch. Nothing
 * here blocks the caller on fd.
 *
 * Writer.plugin_line(bucket, level_msg, message, members, request_id, fields, max_line_bytes)
 * writes host.log's common line in one call: the JSON line the record path would write (the
 * Python code in hostd/handlers/log.py is the reference), byte for byte but for the timestamp.
 * It takes only lines whose every part it can encode exactly as orjson encodes the decoded
 * values, and declines (returns 0, having taken and queued nothing) anything else:
 *   - message: a str; an ASCII one is stripped as str.strip() strips it, another is taken
 *     only when it starts and ends with no whitespace (and encodes as UTF-8);
 *   - fields: empty, null, or a JSON object of at most MAX_FIELDS members with distinct ASCII
 *     keys without escapes that are plain field names (not blank, not padded, not a member of
 *     the record, not secret-looking: hostd/redact.py's rules) and scalar values: true, false,
 *     null, strings without escapes (UTF-8 checked), integers of at most 18 digits, and
 *     decimals that orjson writes back as they are spelt (at most 15 significant digits, no
 *     exponent, no trailing zero, not below 0.0001).
 * When it takes a line, it takes a token from bucket (a Bucket: host.log's per-session rate
 * limit) before queueing it: 1 queued, 2 refused by the rate limit (counted in the bucket),
 * 3 dropped because the queue is full, 0 declined.
 *
 * Bucket(rate_per_s, burst) is hostd/rate_limit.TokenBucket on CLOCK_MONOTONIC, with the same
 * take(), warning_due() and configure().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH_DELAY_NS 5000000L   /* as hostd/logs.py's BATCH_DELAY_S */
#define KEEP_CAPACITY (256 * 1024) /* a batch buffer bigger than this is freed once mostly idle */
#define MAX_FIELDS 64
#define MAX_KEY 256

/* Buffers ------------------------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* The queue and its thread ------------------------------------------------------------------- */

/* What the thread shares with the Writer: freed by whichever of the two lets go last. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the thread waits for lines (or the stop) */
    pthread_cond_t done; /* flush() waits for the thread to end */
    int fd;
    Buf fill;            /* lines queued, guarded by mu */
    Buf batch;           /* the batch being written: the thread's own */
    size_t fill_lines;
    size_t pending;      /* bytes of the batch not yet written: still queued */
    size_t pending_lines;
    int idle, stopping, discard, exited, refs;
} Core;

static void core_free(Core *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->done);
    free(c->fill.data);
    free(c->batch.data);
    free(c);
}

static void *drain(void *arg) {
    Core *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->fill.len == 0 && !c->stopping) {
            c->idle = 1;
            pthread_cond_wait(&c->wake, &c->mu);
        }
        c->idle = 0;
        if (c->discard) break;
        if (!c->stopping) { /* let a burst gather: one wake-up and one write per few ms */
            pthread_mutex_unlock(&c->mu);
            struct timespec delay = {0, BATCH_DELAY_NS};
            nanosleep(&delay, NULL);
            pthread_mutex_lock(&c->mu);
            if (c->discard) break;
        }
        if (c->fill.len == 0) {
            if (c->stopping) break;
            continue;
        }
        Buf full = c->fill; /* swap: the caller goes on filling the buffer just written */
        c->fill = c->batch;
        c->fill.len = 0;
        c->batch = full;
        c->pending = full.len;
        c->pending_lines = c->fill_lines;
        c->fill_lines = 0;
        pthread_mutex_unlock(&c->mu);
        size_t off = 0;
        while (off < full.len) {
            ssize_t n = write(c->fd, full.data + off, full.len - off);
            if (n < 0) {
                if (errno == EINTR) continue;
                break; /* the rest of this batch is given up, as hostd/logs.py does */
            }
            off += (size_t)n;
        }
        pthread_mutex_lock(&c->mu);
        c->pending = c->pending_lines = 0;
        if (c->batch.cap > KEEP_CAPACITY && full.len < c->batch.cap / 4) {
            free(c->batch.data); /* a burst is over: its buffer is not kept */
            c->batch.data = NULL;
            c->batch.cap = 0;
        }
        c->batch.len = 0;
    }
    c->exited = 1;
    pthread_cond_broadcast(&c->done);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) core_free(c);
    return NULL;
}

/* Timestamps: {"ts":"2026-11-25T12:00:00.123Z" -- formatted once per millisecond. */
typedef struct {
    long long milli, second;
    char second_text[32];
    char head[64];
    size_t head_len;
} Stamp;

static void stamp_now(Stamp *s) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long milli = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (milli == s->milli) return;
    long long second = milli / 1000;
    if (second != s->second) {
        time_t t = (time_t)second;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(s->second_text, sizeof s->second_text, "%Y-%m-%dT%H:%M:%S", &tm);
        s->second = second;
    }
    s->milli = milli;
    s->head_len = (size_t)snprintf(s->head, sizeof s->head, "{\"ts\":\"%s.%03dZ\"", s->second_text,
                                   (int)(milli - second * 1000));
}

/* The rate limit ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    double rate_per_s, burst, tokens, last, last_warning, warning_interval_s;
    int warned;
    Py_ssize_t dropped, unreported;
} Bucket;

static double monotonic(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static void bucket_refill(Bucket *b, double now) {
    double elapsed = now - b->last;
    b->last = now;
    if (elapsed > 0) {
        b->tokens += elapsed * b->rate_per_s;
        if (b->tokens > b->burst) b->tokens = b->burst;
    }
}

static int bucket_take(Bucket *b) {
    bucket_refill(b, monotonic());
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    b->dropped++;
    b->unreported++;
    return 0;
}

static int Bucket_init(Bucket *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"rate_per_s", "burst", NULL};
    double rate, burst;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "dd", names, &rate, &burst)) return -1;
    self->rate_per_s = rate;
    self->burst = self->tokens = burst;
    self->last = monotonic();
    self->warning_interval_s = 1.0;
    self->warned = 0;
    self->dropped = self->unreported = 0;
    return 0;
}

static PyObject *Bucket_take(Bucket *self, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(bucket_take(self));
}

static PyObject *Bucket_warning_due(Bucket *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->unreported) return PyLong_FromLong(0);
    double now = monotonic();
    if (self->warned && now - self->last_warning < self->warning_interval_s) return PyLong_FromLong(0);
    Py_ssize_t count = self->unreported;
    self->unreported = 0;
    self->last_warning = now;
    self->warned = 1;
    return PyLong_FromSsize_t(count);
}

static PyObject *Bucket_configure(Bucket *self, PyObject *args) {
    double rate, burst;
    if (!PyArg_ParseTuple(args, "dd", &rate, &burst)) return NULL;
    bucket_refill(self, monotonic());
    self->rate_per_s = rate;
    self->burst = burst;
    if (self->tokens > burst) self->tokens = burst;
    Py_RETURN_NONE;
}

static PyMethodDef Bucket_methods[] = {
    {"take", (PyCFunction)Bucket_take, METH_NOARGS, "take() -> bool: one more line may be written."},
    {"warning_due", (PyCFunction)Bucket_warning_due, METH_NOARGS,
     "warning_due() -> int: lines refused since the last warning, when a warning may be written now."},
    {"configure", (PyCFunction)Bucket_configure, METH_VARARGS,
     "configure(rate_per_s, burst): new limits, the tokens saved kept up to the new burst."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Bucket_members[] = {
    {"rate_per_s", T_DOUBLE, offsetof(Bucket, rate_per_s), READONLY, NULL},
    {"burst", T_DOUBLE, offsetof(Bucket, burst), READONLY, NULL},
    {"dropped", T_PYSSIZET, offsetof(Bucket, dropped), READONLY, NULL},
    {"warning_interval_s", T_DOUBLE, offsetof(Bucket, warning_interval_s), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BucketType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hostd._logline.Bucket",
    .tp_basicsize = sizeof(Bucket),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Bucket(rate_per_s, burst): host.log's per-session rate limit (hostd/rate_limit.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Bucket_init,
    .tp_methods = Bucket_methods,
    .tp_members = Bucket_members,
};

/* JSON pieces ------------------------------------------------------------------------------- */

static inline int ascii_space(unsigned char c) { /* str.isspace() of an ASCII character */
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
}

/* How many bytes orjson writes for each byte of a str's UTF-8: 1, 2 (\" \\ \b \t \n \f \r) or 6
 * (\u00XX for the other control characters). */
static unsigned char ESCAPED[256];

static void init_escaped(void) {
    for (int c = 0; c < 256; c++) ESCAPED[c] = 1;
    for (int c = 0; c < 0x20; c++) ESCAPED[c] = 6;
    ESCAPED['"'] = ESCAPED['\\'] = ESCAPED['\b'] = ESCAPED['\t'] = ESCAPED['\n'] = ESCAPED['\f'] = ESCAPED['\r'] = 2;
}

static size_t escaped_len(const unsigned char *s, size_t n) {
    size_t len = n + 2;
    for (size_t i = 0; i < n; i++) len += ESCAPED[s[i]] - 1u;
    return len;
}

static char *put_escaped(char *out, const unsigned char *s, size_t n) { /* as orjson writes a str */
    static const char hex[] = "0123456789abcdef";
    *out++ = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && ESCAPED[s[run]] == 1) run++;
        memcpy(out, s + i, run - i); /* the bytes written as they are, in one copy */
        out += run - i;
        if (run == n) break;
        unsigned char c = s[run];
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default:
            memcpy(out, "u00", 3);
            out[3] = hex[c >> 4];
            out[4] = hex[c & 15];
            out += 5;
        }
        i = run + 1;
    }
    *out++ = '"';
    return out;
}

/* A str as UTF-8 (its cached copy), stripped when strip is set; 0 when it cannot be taken. */
static int str_utf8(PyObject *s, int strip, const unsigned char **data, size_t *len) {
    if (!PyUnicode_Check(s)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s)) {
        const unsigned char *p = PyUnicode_DATA(s);
        size_t lo = 0, hi = (size_t)n;
        if (strip) {
            while (lo < hi && ascii_space(p[lo])) lo++;
            while (hi > lo && ascii_space(p[hi - 1])) hi--;
        }
        *data = p + lo;
        *len = hi - lo;
        return 1;
    }
    if (strip && n > 0 &&
        (Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(s, 0)) || Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(s, n - 1))))
        return 0;
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &size);
    if (utf8 == NULL) { /* lone surrogates: the record path words what happens to them */
        PyErr_Clear();
        return 0;
    }
    *data = (const unsigned char *)utf8;
    *len = (size_t)size;
    return 1;
}

/* Strict UTF-8 of one sequence starting at p[0] >= 0x80: its length, or 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

typedef struct {
    const unsigned char *p, *end;
} Cursor;

static void skip_ws(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* A string without escapes or control characters at c->p (the opening quote); utf8: check bytes
 * >= 0x80 as UTF-8, else refuse them. Leaves c->p past the closing quote. */
static int plain_string(Cursor *c, int utf8) {
    const unsigned char *p = c->p + 1;
    while (p < c->end) {
        unsigned char ch = *p;
        if (ch == '"') {
            c->p = p + 1;
            return 1;
        }
        if (ch == '\\' || ch < 0x20) return 0;
        if (ch >= 0x80) {
            size_t n = utf8 ? utf8_seq(p, c->end) : 0;
            if (n == 0) return 0;
            p += n;
        } else {
            p++;
        }
    }
    return 0;
}

/* A number at c->p that orjson writes back as it is spelt (see the top of this file). */
static int plain_number(Cursor *c) {
    const unsigned char *p = c->p, *end = c->end;
    int negative = p < end && *p == '-';
    if (negative) p++;
    if (p >= end || *p < '0' || *p > '9') return 0;
    const unsigned char *digits = p;
    if (*p == '0') p++;
    else while (p < end && *p >= '0' && *p <= '9') p++;
    size_t int_digits = (size_t)(p - digits);
    int zero = *digits == '0';
    if (p < end && (*p == 'e' || *p == 'E')) return 0;
    if (p >= end || *p != '.') {
        if (int_digits > 18 || (negative && zero)) return 0; /* -0 is written 0 */
        c->p = p;
        return 1;
    }
    const unsigned char *frac = ++p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    size_t frac_digits = (size_t)(p - frac);
    if (frac_digits == 0 || (p < end && (*p == 'e' || *p == 'E'))) return 0;
    if (frac[frac_digits - 1] == '0' && frac_digits != 1) return 0; /* 1.50 is written 1.5; x.0 stays */
    size_t significant;
    if (zero) {
        size_t leading = 0;
        while (leading < frac_digits && frac[leading] == '0') leading++;
        if (leading == frac_digits) significant = 0; /* 0.0 */
        else if (leading > 3) return 0;              /* below 0.0001 */
        else significant = frac_digits - leading;
    } else {
        significant = int_digits + frac_digits;
    }
    if (int_digits > 15 || significant > 15) return 0;
    c->p = p;
    return 1;
}

static int literal(Cursor *c, const char *word, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return 0;
    c->p += n;
    return 1;
}

/* A member of the record itself: ts level msg plugin session request_id truncated. */
static int record_key(const unsigned char *k, size_t n) {
    switch (n) {
    case 2: return memcmp(k, "ts", 2) == 0;
    case 3: return memcmp(k, "msg", 3) == 0;
    case 5: return memcmp(k, "level", 5) == 0;
    case 6: return memcmp(k, "plugin", 6) == 0;
    case 7: return memcmp(k, "session", 7) == 0;
    case 9: return memcmp(k, "truncated", 9) == 0;
    case 10: return memcmp(k, "request_id", 10) == 0;
    default: return 0;
    }
}

/* Does the folded key (lower case, without - and _) hold a secret word: authorization, cookie,
 * token, secret, password, apikey? One pass, a word looked for only where its letter is. */
static int secret_word(const char *f, size_t n) {
#define AT(word) (n - i >= sizeof word - 1 && memcmp(f + i, word, sizeof word - 1) == 0)
    for (size_t i = 0; i < n; i++) {
        switch (f[i]) {
        case 'a': if (AT("authorization") || AT("apikey")) return 1; break;
        case 'c': if (AT("cookie")) return 1; break;
        case 't': if (AT("token")) return 1; break;
        case 's': if (AT("secret")) return 1; break;
        case 'p': if (AT("password")) return 1; break;
        default: break;
        }
    }
    return 0;
#undef AT
}

/* hostd/redact.plain_keys of one ASCII key without escapes. */
static int plain_key(const unsigned char *k, size_t n) {
    if (n == 0 || n > MAX_KEY || ascii_space(k[0]) || ascii_space(k[n - 1]) || record_key(k, n)) return 0;
    char folded[MAX_KEY];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = k[i];
        if (ch == '-' || ch == '_') continue;
        folded[m++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    return !secret_word(folded, m);
}

typedef struct {
    const unsigned char *key, *value;
    size_t key_len, value_len; /* the key without its quotes; the value as spelt */
} Field;

/* The members of a flat fields object, or -1 to decline; 0 for none, null and {}. */
static int flat_fields(const unsigned char *data, size_t len, Field *fields) {
    if (len == 0) return 0; /* no fields member */
    Cursor c = {data, data + len};
    skip_ws(&c);
    if (c.p == c.end) return -1;
    if (*c.p == 'n') {
        if (!literal(&c, "null", 4)) return -1;
        skip_ws(&c);
        return c.p == c.end ? 0 : -1;
    }
    if (*c.p != '{') return -1;
    c.p++;
    skip_ws(&c);
    int n = 0;
    if (c.p < c.end && *c.p == '}') {
        c.p++;
    } else {
        for (;;) {
            if (c.p >= c.end || *c.p != '"' || n == MAX_FIELDS) return -1;
            const unsigned char *key = c.p + 1;
            if (!plain_string(&c, 0)) return -1;
            size_t key_len = (size_t)(c.p - 1 - key);
            if (!plain_key(key, key_len)) return -1;
            for (int i = 0; i < n; i++) /* a repeated key: the record keeps the last value */
                if (fields[i].key_len == key_len && memcmp(fields[i].key, key, key_len) == 0) return -1;
            skip_ws(&c);
            if (c.p >= c.end || *c.p != ':') return -1;
            c.p++;
            skip_ws(&c);
            if (c.p >= c.end) return -1;
            const unsigned char *value = c.p;
            int ok;
            switch (*c.p) {
            case '"': ok = plain_string(&c, 1); break;
            case 't': ok = literal(&c, "true", 4); break;
            case 'f': ok = literal(&c, "false", 5); break;
            case 'n': ok = literal(&c, "null", 4); break;
            default: ok = plain_number(&c);
            }
            if (!ok) return -1;
            fields[n].key = key;
            fields[n].key_len = key_len;
            fields[n].value = value;
            fields[n].value_len = (size_t)(c.p - value);
            n++;
            skip_ws(&c);
            if (c.p < c.end && *c.p == ',') {
                c.p++;
                skip_ws(&c);
                continue;
            }
            if (c.p < c.end && *c.p == '}') {
                c.p++;
                break;
            }
            return -1;
        }
    }
    skip_ws(&c);
    return c.p == c.end ? n : -1;
}

/* The writer ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Core *core;
    Py_ssize_t max_queue_bytes, max_lines;
    Stamp stamp;
} Writer;

/* Room for size more bytes of one line in the queue (mu held), else 0: the line is dropped. */
static int room(Writer *w, size_t size) {
    Core *c = w->core;
    size_t queued = c->fill.len + c->pending;
    size_t max_bytes = (size_t)w->max_queue_bytes;
    if (queued >= max_bytes || c->fill_lines + c->pending_lines >= (size_t)w->max_lines || queued + size > max_bytes)
        return 0;
    return buf_reserve(&c->fill, size) == 0;
}

static void queued(Core *c) { /* one line appended (mu held) */
    c->fill_lines++;
    if (c->idle) {
        c->idle = 0;
        pthread_cond_signal(&c->wake);
    }
}

static int Writer_init(Writer *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"fd", "max_queue_bytes", "max_lines", NULL};
    int fd;
    Py_ssize_t max_queue_bytes, max_lines;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "inn", names, &fd, &max_queue_bytes, &max_lines)) return -1;
    if (self->core != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Writer is already started");
        return -1;
    }
    Core *c = calloc(1, sizeof *c);
    if (c == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->done, NULL);
    c->fd = fd;
    c->refs = 2;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024); /* it calls write(2) and nanosleep(2), no more */
    pthread_t thread;
    int err = pthread_create(&thread, &attr, drain, c);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        core_free(c);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->core = c;
    self->max_queue_bytes = max_queue_bytes;
    self->max_lines = max_lines;
    self->stamp.milli = self->stamp.second = -1;
    return 0;
}

static void Writer_dealloc(Writer *self) {
    Core *c = self->core;
    if (c != NULL) { /* what is still queued is not written: the thread ends at its next turn */
        pthread_mutex_lock(&c->mu);
        c->stopping = c->discard = 1;
        pthread_cond_signal(&c->wake);
        int last = --c->refs == 0;
        pthread_mutex_unlock(&c->mu);
        if (last) core_free(c);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Writer_write(Writer *self, PyObject *line) {
    Py_buffer view;
    if (PyObject_GetBuffer(line, &view, PyBUF_SIMPLE) < 0) return NULL;
    Core *c = self->core;
    int ok = 0;
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        ok = room(self, (size_t)view.len);
        if (ok) {
            memcpy(c->fill.data + c->fill.len, view.buf, (size_t)view.len);
            c->fill.len += (size_t)view.len;
            queued(c);
        }
        pthread_mutex_unlock(&c->mu);
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyObject *Writer_plugin_line(Writer *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "plugin_line(bucket, level_msg, message, members, request_id, fields, max_line_bytes)");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &BucketType) || !PyBytes_Check(args[1]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "plugin_line: a Bucket, then bytes, str, bytes");
        return NULL;
    }
    Py_ssize_t max_line = PyLong_AsSsize_t(args[6]);
    if (max_line == -1 && PyErr_Occurred()) return NULL;
    Core *c = self->core;
    const unsigned char *msg, *rid = NULL;
    size_t msg_len, rid_len = 0;
    if (c == NULL || !str_utf8(args[2], 1, &msg, &msg_len)) return PyLong_FromLong(0);
    if (msg_len == 0) {
        msg = (const unsigned char *)"plugin log";
        msg_len = 10;
    }
    if (args[4] != Py_None) {
        if (!str_utf8(args[4], 0, &rid, &rid_len)) return PyLong_FromLong(0);
        if (rid_len == 0) rid = NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[5], &view, PyBUF_SIMPLE) < 0) return NULL;
    Field fields[MAX_FIELDS];
    int n = view.len > max_line ? -1 : flat_fields(view.buf, (size_t)view.len, fields); /* not read past */
    if (n < 0) {
        PyBuffer_Release(&view);
        return PyLong_FromLong(0);
    }
    /* {"ts":"…"  ,"level":"…","msg":  "…"  ,"plugin":…,"session":…  [,"request_id":"…"]  [,"k":v]…  }\n */
    const char *level_msg = PyBytes_AS_STRING(args[1]), *members = PyBytes_AS_STRING(args[3]);
    size_t level_len = (size_t)PyBytes_GET_SIZE(args[1]), members_len = (size_t)PyBytes_GET_SIZE(args[3]);
    size_t msg_out = escaped_len(msg, msg_len), rid_out = rid ? 14 + escaped_len(rid, rid_len) : 0;
    size_t size = level_len + msg_out + members_len + rid_out + 2; /* and the stamp, below */
    for (int i = 0; i < n; i++) size += 4 + fields[i].key_len + fields[i].value_len; /* ,"k":v */
    stamp_now(&self->stamp);
    size += self->stamp.head_len;
    if (max_line < 0 || size > (size_t)max_line) { /* the record path cuts it */
        PyBuffer_Release(&view);
        return PyLong_FromLong(0);
    }
    if (!bucket_take((Bucket *)args[0])) {
        PyBuffer_Release(&view);
        return PyLong_FromLong(2);
    }
    pthread_mutex_lock(&c->mu);
    if (!room(self, size)) {
        pthread_mutex_unlock(&c->mu);
        PyBuffer_Release(&view);
        return PyLong_FromLong(3);
    }
    char *out = c->fill.data + c->fill.len, *start = out;
    memcpy(out, self->stamp.head, self->stamp.head_len), out += self->stamp.head_len;
    memcpy(out, level_msg, level_len), out += level_len;
    out = put_escaped(out, msg, msg_len);
    memcpy(out, members, members_len), out += members_len;
    if (rid) {
        memcpy(out, ",\"request_id\":", 14), out += 14;
        out = put_escaped(out, rid, rid_len);
    }
    for (int i = 0; i < n; i++) {
        memcpy(out, ",\"", 2), out += 2;
        memcpy(out, fields[i].key, fields[i].key_len), out += fields[i].key_len;
        memcpy(out, "\":", 2), out += 2;
        memcpy(out, fields[i].value, fields[i].value_len), out += fields[i].value_len;
    }
    *out++ = '}';
    *out++ = '\n';
    c->fill.len += (size_t)(out - start);
    queued(c);
    pthread_mutex_unlock(&c->mu);
    PyBuffer_Release(&view);
    return PyLong_FromLong(1);
}

static PyObject *Writer_flush(Writer *self, PyObject *arg) {
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    Core *c = self->core;
    if (c == NULL) Py_RETURN_NONE;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout > 0) {
        double whole = (double)(long long)timeout;
        deadline.tv_sec += (time_t)whole;
        deadline.tv_nsec += (long)((timeout - whole) * 1e9);
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_signal(&c->wake);
    while (!c->exited)
        if (pthread_cond_timedwait(&c->done, &c->mu, &deadline) == ETIMEDOUT) break;
    pthread_mutex_unlock(&c->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Writer_queued_bytes(Writer *self, void *Py_UNUSED(closure)) {
    Core *c = self->core;
    size_t n = 0;
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        n = c->fill.len + c->pending;
        pthread_mutex_unlock(&c->mu);
    }
    return PyLong_FromSize_t(n);
}

static PyMethodDef Writer_methods[] = {
    {"write", (PyCFunction)Writer_write, METH_O, "write(line) -> bool: queued, or False: dropped (the queue is full)."},
    {"plugin_line", (PyCFunction)(void (*)(void))Writer_plugin_line, METH_FASTCALL,
     "plugin_line(bucket, level_msg, message, members, request_id, fields, max_line_bytes) -> int: "
     "1 queued, 2 over the rate limit, 3 dropped (the queue is full), 0 declined."},
    {"flush", (PyCFunction)Writer_flush, METH_O, "flush(timeout): write what is queued and stop the thread."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Writer_members[] = {
    {"max_queue_bytes", T_PYSSIZET, offsetof(Writer, max_queue_bytes), 0, NULL},
    {"max_lines", T_PYSSIZET, offsetof(Writer, max_lines), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Writer_getset[] = {
    {"queued_bytes", (getter)Writer_queued_bytes, NULL, "Bytes queued and not yet written.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hostd._logline.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writer(fd, max_queue_bytes, max_lines): log lines queued for a thread that writes them to fd.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_methods = Writer_methods,
    .tp_members = Writer_members,
    .tp_getset = Writer_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hostd._logline", "The log writer's C half and host.log's written line (hostd/logs.py).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__logline(void) {
    init_escaped();
    if (PyType_Ready(&BucketType) < 0 || PyType_Ready(&WriterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Bucket", (PyObject *)&BucketType) < 0 ||
        PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
