/* hostd-bridge.so: a native CLIProxyAPI plugin (C ABI version 1) that forwards every call to a
 * `hostd bridge` child process over a socketpair (PROTOCOL.md §15).
 *
 * It lives inside the proxy's process, so it must never crash it, leak, or block one caller on
 * another: no lock is held across a call (callers wait on their own condition variable; one
 * reader thread hands answers out by id; writes are serialised), every thread it starts is joined
 * before shutdown() returns, and every queue is bounded. Everything that can be decided in Python
 * (YAML, starting the plugin, scopes, plugin restarts) is decided by hostd; this file only spawns
 * hostd, multiplexes requests, pumps streams and relays host calls.
 *
 * Threads: one supervisor (forks hostd and lives until shutdown, so PR_SET_PDEATHSIG stays armed;
 * restarts hostd with backoff and replays the last successful register), one reader per
 * connection, one worker per relayed host call and per open stream (at most MAX_WORKERS).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json_scan.h"

#define ABI_VERSION 1u
#define DEFAULT_TIMEOUT_S 600.0
#define SHUTDOWN_CALL_S 5.0
#define HOSTD_EXIT_S 5.0
#define MAX_WORKERS 1024
#define MAX_LINE ((size_t)256 << 20) /* hostd's answers are bounded by 128 MiB (§4) */
#define BACKOFF_MIN_S 0.5
#define BACKOFF_MAX_S 30.0
#define BACKOFF_RESET_S 60.0
#define NBUCKETS 256
#define WRITE_STALL_S 30.0

#ifndef HOSTD_DEFAULT_PATH
#define HOSTD_DEFAULT_PATH ""
#endif

typedef struct {
    void *ptr;
    size_t len;
} cliproxy_buffer;

typedef struct {
    uint32_t abi_version;
    void *host_ctx;
    int (*call)(void *host_ctx, const char *method, const uint8_t *req, size_t req_len, cliproxy_buffer *resp);
    void (*free_buffer)(void *ptr, size_t len);
} cliproxy_host_api;

typedef struct {
    uint32_t abi_version;
    int (*call)(const char *method, const uint8_t *req, size_t req_len, cliproxy_buffer *resp);
    void (*free_buffer)(void *ptr, size_t len);
    void (*shutdown)(void);
} cliproxy_plugin_api;

int cliproxy_plugin_init(const cliproxy_host_api *host, cliproxy_plugin_api *plugin);

/* ---------------------------------------------------------------------------------------------
 * State
 */

enum { W_WAITING, W_ANSWERED, W_GONE };

typedef struct waiter {
    uint64_t id;
    uint64_t gen;
    int state;
    char *answer; /* malloc'd line, owned by the waiter once answered */
    size_t answer_len;
    pthread_cond_t cv;
    struct waiter *next;
} waiter;

typedef struct worker {
    pthread_t th;
    int done;
    struct worker *next;
} worker;

typedef struct relay {
    char *id; /* the raw JSON id of hostd's request */
    size_t id_len;
    uint64_t gen;
    int cancelled;
    struct relay *next;
} relay;

static struct {
    pthread_mutex_t mu; /* state below; never held across I/O or a call */
    pthread_cond_t sup_cv;
    int active;         /* between a successful init and shutdown */
    int stopping;
    char plugin_id[129];
    void *host_ctx;
    int (*host_call)(void *, const char *, const uint8_t *, size_t, cliproxy_buffer *);
    void (*host_free)(void *, size_t);

    /* supervisor */
    int sup_started;
    pthread_t sup;
    int want_spawn;
    uint64_t spawn_seq; /* attempts finished */
    char spawn_error[512];
    int conn_up;  /* a connection exists and its reader runs */
    int ready;    /* conn_up and the replay (if any) is done: proxy calls may go */
    int conn_dead;
    int conn_fd;  /* for cutting the connection under mu; cleared before the fd is closed */
    uint64_t gen; /* connection generation */
    pid_t pid;
    double timeout_s;

    /* the params of the last successful register/reconfigure, replayed as plugin.register to a
     * restarted hostd (its plugin is new), as §14 replays a restarted worker */
    int has_replay;
    char *replay_params;
    size_t replay_params_len;

    /* calls waiting for an answer, by id */
    uint64_t next_id;
    waiter *buckets[NBUCKETS];

    worker *workers;
    int nworkers;
    relay *relays;

    /* writer side: the fd and its generation, under wmu */
    pthread_mutex_t wmu;
    int w_fd;
    uint64_t w_gen;
} B = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wmu = PTHREAD_MUTEX_INITIALIZER,
    .w_fd = -1,
    .conn_fd = -1,
    .pid = -1,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_conds(void) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&B.sup_cv, &a);
    pthread_condattr_destroy(&a);
}

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timespec abs_ts(double at) {
    struct timespec ts;
    if (at > 1e15) at = 1e15;
    ts.tv_sec = (time_t)at;
    ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    return ts;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(line, sizeof line, "hostd-bridge[%s]: ", B.plugin_id[0] ? B.plugin_id : "?");
    if (n < 0) n = 0;
    if ((size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    ssize_t w = write(2, line, len);
    (void)w;
}

/* ---------------------------------------------------------------------------------------------
 * Envelopes handed back to the proxy
 */

static int give(cliproxy_buffer *resp, jbuf *b) {
    if (b->oom) {
        free(b->p);
        static const char oom[] = "{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":\"out of memory\"}}";
        b->p = malloc(sizeof oom);
        if (!b->p) {
            resp->ptr = NULL;
            resp->len = 0;
            return 1;
        }
        memcpy(b->p, oom, sizeof oom);
        b->n = sizeof oom - 1;
    }
    resp->ptr = b->p;
    resp->len = b->n;
    return 0;
}

static int give_error(cliproxy_buffer *resp, const char *code, const char *message, int retryable) {
    jbuf b = {0};
    jb_puts(&b, "{\"ok\":false,\"error\":{\"code\":");
    jb_cstr(&b, code);
    jb_puts(&b, ",\"message\":");
    jb_cstr(&b, message);
    if (retryable) jb_puts(&b, ",\"retryable\":true");
    jb_puts(&b, "}}");
    return give(resp, &b);
}

static int give_unavailable(cliproxy_buffer *resp) {
    return give_error(resp, "plugin_unavailable", "plugin disconnected", 1);
}

/* Appends the JSON-RPC error object e as an envelope error (code from data.code or fallback). */
static void jb_envelope_error(jbuf *b, jspan e, const char *fallback_code) {
    jspan msg = {0}, data = {0}, code = {0}, st = {0}, rt = {0};
    int has_data = js_get(e, "data", &data) && js_is_object(data);
    jb_puts(b, "{\"ok\":false,\"error\":{\"code\":");
    if (has_data && js_get(data, "code", &code) && js_is_string(code) && code.n > 2) jb_span(b, code);
    else jb_cstr(b, fallback_code);
    jb_puts(b, ",\"message\":");
    if (js_get(e, "message", &msg) && js_is_string(msg) && msg.n > 2) jb_span(b, msg);
    else jb_cstr(b, "plugin call failed");
    if (has_data && js_get(data, "http_status", &st) && js_is_number(st) && js_number(st, 0) > 0) {
        jb_puts(b, ",\"http_status\":");
        jb_span(b, st);
    }
    if (has_data && js_get(data, "retryable", &rt) && js_is_true(rt)) jb_puts(b, ",\"retryable\":true");
    jb_puts(b, "}}");
}

/* ---------------------------------------------------------------------------------------------
 * Writing lines and waiting for answers
 */

/* Writes one line on connection gen. Returns 0, or -1 when it could not be written by deadline
 * (waiting for the writer lock included). A partial write breaks the framing, and hostd reading
 * nothing for WRITE_STALL_S means it is hung: either way the connection is cut (the supervisor
 * restarts hostd). */
static int write_line(uint64_t gen, jbuf *line, double deadline) {
    if (line->oom) return -1;
    for (size_t i = 0; i < line->n; i++)
        if (line->p[i] == '\n' || line->p[i] == '\r') line->p[i] = ' '; /* only whitespace in valid JSON */
    jb_put(line, "\n", 1);
    if (line->oom) return -1;
    int rc = 0;
    size_t off = 0;
    struct timespec lock_by = abs_ts(deadline);
    if (pthread_mutex_clocklock(&B.wmu, CLOCK_MONOTONIC, &lock_by) != 0) return -1;
    double progress = now_s();
    if (B.w_fd < 0 || B.w_gen != gen) {
        rc = -1;
        goto out;
    }
    while (off < line->n) {
        ssize_t w = send(B.w_fd, line->p + off, line->n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            progress = now_s();
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        int stalled = 0;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            double now = now_s();
            double left = deadline - now;
            stalled = now - progress >= WRITE_STALL_S;
            if (left > 0 && !stalled) {
                struct pollfd pfd = {.fd = B.w_fd, .events = POLLOUT};
                int ms = left > 1.0 ? 1000 : (int)(left * 1000) + 1;
                int pr = poll(&pfd, 1, ms);
                if (pr >= 0 && !(pfd.revents & (POLLERR | POLLHUP | POLLNVAL))) continue;
                if (pr < 0 && errno == EINTR) continue;
            }
        }
        if (off > 0 || stalled) {
            if (stalled) logf_("hostd has read nothing for %.0f s; cutting the connection", WRITE_STALL_S);
            else logf_("write to hostd failed mid-line; cutting the connection");
            shutdown(B.w_fd, SHUT_RDWR);
        }
        rc = -1;
        break;
    }
out:
    pthread_mutex_unlock(&B.wmu);
    return rc;
}

static waiter **bucket(uint64_t id) { return &B.buckets[id % NBUCKETS]; }

static void unlink_waiter(waiter *w) {
    for (waiter **pp = bucket(w->id); *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

enum { CALL_OK, CALL_GONE, CALL_TIMEOUT };

static void send_cancel(uint64_t gen, uint64_t id) {
    jbuf b = {0};
    jb_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":");
    jb_u64(&b, id);
    jb_puts(&b, "}}");
    write_line(gen, &b, now_s() + 1.0);
    free(b.p);
}

/* Sends `method` with params (already JSON) on connection gen (0: the current one, which must be
 * ready) and waits for its answer until deadline. On CALL_OK *answer is the malloc'd line. */
static int rpc_call(uint64_t gen, const char *method, jbuf *params, double deadline, char **answer, size_t *len,
                    uint64_t *used_gen) {
    waiter w = {0};
    cond_init_mono(&w.cv);
    pthread_mutex_lock(&B.mu);
    if (gen == 0) {
        if (!B.ready || B.stopping) {
            pthread_mutex_unlock(&B.mu);
            pthread_cond_destroy(&w.cv);
            return CALL_GONE;
        }
        gen = B.gen;
    } else if (!B.conn_up || B.conn_dead || B.gen != gen) {
        pthread_mutex_unlock(&B.mu);
        pthread_cond_destroy(&w.cv);
        return CALL_GONE;
    }
    if (used_gen) *used_gen = gen;
    w.id = ++B.next_id;
    w.gen = gen;
    w.next = *bucket(w.id);
    *bucket(w.id) = &w;
    pthread_mutex_unlock(&B.mu);

    jbuf line = {0};
    jb_puts(&line, "{\"jsonrpc\":\"2.0\",\"id\":");
    jb_u64(&line, w.id);
    jb_puts(&line, ",\"method\":");
    jb_cstr(&line, method);
    jb_puts(&line, ",\"params\":");
    if (params && params->n) jb_put(&line, params->p, params->n);
    else jb_puts(&line, "{}");
    if (params && params->oom) line.oom = 1;
    jb_puts(&line, "}");
    int wr = write_line(gen, &line, deadline);
    free(line.p);

    int rc;
    pthread_mutex_lock(&B.mu);
    if (wr != 0 && w.state == W_WAITING) w.state = W_GONE;
    while (w.state == W_WAITING) {
        struct timespec ts = abs_ts(deadline);
        if (pthread_cond_timedwait(&w.cv, &B.mu, &ts) == ETIMEDOUT && w.state == W_WAITING) break;
    }
    if (w.state == W_WAITING) {
        rc = CALL_TIMEOUT;
    } else if (w.state == W_ANSWERED) {
        *answer = w.answer;
        *len = w.answer_len;
        rc = CALL_OK;
    } else {
        rc = CALL_GONE;
    }
    unlink_waiter(&w); /* no-op when the reader or a disconnect already took it out */
    pthread_mutex_unlock(&B.mu);
    pthread_cond_destroy(&w.cv);
    if (rc == CALL_TIMEOUT) send_cancel(gen, w.id);
    return rc;
}

/* Sends a request whose answer nobody waits for (it is dropped as unmatched). */
static void rpc_forget(uint64_t gen, const char *method, jbuf *params) {
    uint64_t id;
    pthread_mutex_lock(&B.mu);
    if (gen == 0) gen = B.gen;
    id = ++B.next_id;
    pthread_mutex_unlock(&B.mu);
    jbuf line = {0};
    jb_puts(&line, "{\"jsonrpc\":\"2.0\",\"id\":");
    jb_u64(&line, id);
    jb_puts(&line, ",\"method\":");
    jb_cstr(&line, method);
    jb_puts(&line, ",\"params\":");
    jb_put(&line, params->p, params->n);
    jb_puts(&line, "}");
    write_line(gen, &line, now_s() + 5.0);
    free(line.p);
}

/* ---------------------------------------------------------------------------------------------
 * Worker threads (relayed host calls, stream pumps): bounded, each joined
 */

typedef struct {
    void *(*fn)(void *);
    void *arg;
    worker *self;
} worker_start;

static void *worker_main(void *p) {
    worker_start ws = *(worker_start *)p;
    free(p);
    ws.fn(ws.arg);
    pthread_mutex_lock(&B.mu);
    ws.self->done = 1;
    pthread_cond_broadcast(&B.sup_cv);
    pthread_mutex_unlock(&B.mu);
    return NULL;
}

/* Joins the workers that have finished. Called without mu. */
static void reap_workers(void) {
    worker *done = NULL;
    pthread_mutex_lock(&B.mu);
    for (worker **pp = &B.workers; *pp;) {
        worker *w = *pp;
        if (w->done) {
            *pp = w->next;
            w->next = done;
            done = w;
            B.nworkers--;
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&B.mu);
    while (done) {
        worker *n = done->next;
        pthread_join(done->th, NULL);
        free(done);
        done = n;
    }
}

static int spawn_worker(void *(*fn)(void *), void *arg) {
    reap_workers();
    worker *w = calloc(1, sizeof *w);
    worker_start *ws = malloc(sizeof *ws);
    if (!w || !ws) {
        free(w);
        free(ws);
        return -1;
    }
    ws->fn = fn;
    ws->arg = arg;
    ws->self = w;
    pthread_mutex_lock(&B.mu);
    if (B.nworkers >= MAX_WORKERS) {
        pthread_mutex_unlock(&B.mu);
        free(w);
        free(ws);
        return -1;
    }
    if (pthread_create(&w->th, NULL, worker_main, ws) != 0) {
        pthread_mutex_unlock(&B.mu);
        free(w);
        free(ws);
        return -1;
    }
    w->next = B.workers;
    B.workers = w;
    B.nworkers++;
    pthread_mutex_unlock(&B.mu);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Calling the proxy's host table
 */

/* Calls host->call; on success *env is a validated copy of the envelope (malloc'd). */
static int host_invoke(const char *method, const char *req, size_t len, char **env, size_t *env_len) {
    cliproxy_buffer out = {0};
    int rc = B.host_call(B.host_ctx, method, (const uint8_t *)req, len, &out);
    *env = NULL;
    *env_len = 0;
    if (out.ptr && out.len > 0 && rc == 0) {
        *env = malloc(out.len + 1);
        if (*env) {
            memcpy(*env, out.ptr, out.len);
            (*env)[out.len] = 0;
            *env_len = out.len;
        }
    }
    if (out.ptr && B.host_free) B.host_free(out.ptr, out.len);
    if (!*env) return -1;
    jspan v;
    if (!js_valid(*env, *env_len, &v) || !js_is_object(v)) {
        free(*env);
        *env = NULL;
        return -1;
    }
    return 0;
}

/* True when the proxy's envelope says ok. */
static int envelope_ok(const char *env, size_t len) {
    jspan v, ok;
    return js_valid(env, len, &v) && js_get(v, "ok", &ok) && js_is_true(ok);
}

static int host_simple(const char *method, jbuf *req) {
    char *env = NULL;
    size_t n = 0;
    if (req->oom) return -1;
    int rc = host_invoke(method, req->p, req->n, &env, &n);
    int ok = rc == 0 && envelope_ok(env, n);
    free(env);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * Relay: hostd's requests for host.* calls the proxy serves
 */

typedef struct {
    char *line;
    size_t len;
    uint64_t gen;
    relay r;
} relay_job;

static void relay_answer(relay_job *j, jbuf *body) {
    int drop;
    pthread_mutex_lock(&B.mu);
    drop = j->r.cancelled;
    for (relay **pp = &B.relays; *pp; pp = &(*pp)->next)
        if (*pp == &j->r) {
            *pp = j->r.next;
            break;
        }
    pthread_mutex_unlock(&B.mu);
    if (!drop) {
        jbuf line = {0};
        jb_puts(&line, "{\"jsonrpc\":\"2.0\",\"id\":");
        jb_put(&line, j->r.id, j->r.id_len);
        jb_put(&line, body->p, body->n);
        if (body->oom) line.oom = 1;
        jb_puts(&line, "}");
        write_line(j->gen, &line, now_s() + 30.0);
        free(line.p);
    }
}

static void jb_rpc_error(jbuf *b, const char *message_prefix, const char *method) {
    jbuf m = {0};
    jb_puts(&m, message_prefix);
    jb_puts(&m, method);
    jb_puts(&m, " failed");
    jb_puts(b, ",\"error\":{\"code\":-32000,\"message\":");
    jb_str(b, m.p ? m.p : "", m.n);
    jb_puts(b, ",\"data\":{\"code\":\"host_call_failed\"}}");
    if (m.oom) b->oom = 1;
    free(m.p);
}

static void *relay_main(void *p) {
    relay_job *j = p;
    jspan v, m, params;
    jbuf body = {0};
    js_valid(j->line, j->len, &v); /* validated by the reader */
    js_get(v, "method", &m);
    char *method = js_strdup(m);
    int has_params = js_get(v, "params", &params) && !js_is_null(params);
    char *env = NULL;
    size_t env_len = 0;
    if (!method) {
        jb_puts(&body, ",\"error\":{\"code\":-32600,\"message\":\"invalid method\",\"data\":{\"code\":\"invalid_request\"}}");
    } else if (host_invoke(method, has_params ? params.p : "{}", has_params ? params.n : 2, &env, &env_len) != 0) {
        jb_rpc_error(&body, "host call ", method);
    } else {
        jspan e, ok, res, err;
        js_valid(env, env_len, &e);
        if (js_get(e, "ok", &ok) && js_is_true(ok)) {
            jb_puts(&body, ",\"result\":");
            if (js_get(e, "result", &res) && !js_is_null(res)) jb_span(&body, res);
            else jb_puts(&body, "{}");
        } else {
            jspan code = {0}, msg = {0}, st = {0}, rt = {0};
            int has_err = js_get(e, "error", &err) && js_is_object(err);
            jb_puts(&body, ",\"error\":{\"code\":-32000,\"message\":");
            if (has_err && js_get(err, "message", &msg) && js_is_string(msg) && msg.n > 2) jb_span(&body, msg);
            else {
                jbuf t = {0};
                jb_puts(&t, "host call ");
                jb_puts(&t, method);
                jb_puts(&t, " failed");
                jb_str(&body, t.p ? t.p : "", t.n);
                free(t.p);
            }
            jb_puts(&body, ",\"data\":{\"code\":");
            if (has_err && js_get(err, "code", &code) && js_is_string(code) && code.n > 2) jb_span(&body, code);
            else jb_puts(&body, "\"host_call_failed\"");
            if (has_err && js_get(err, "http_status", &st) && js_is_number(st) && js_number(st, 0) > 0) {
                jb_puts(&body, ",\"http_status\":");
                jb_span(&body, st);
            }
            if (has_err && js_get(err, "retryable", &rt) && js_is_true(rt)) jb_puts(&body, ",\"retryable\":true");
            jb_puts(&body, "}}");
        }
    }
    relay_answer(j, &body);
    free(body.p);
    free(env);
    free(method);
    free(j->r.id);
    free(j->line);
    free(j);
    return NULL;
}

/* Answers a request of hostd's at once (from the reader thread). */
static void answer_now(uint64_t gen, jspan id, int code, const char *data_code, const char *message) {
    jbuf line = {0};
    jb_puts(&line, "{\"jsonrpc\":\"2.0\",\"id\":");
    jb_span(&line, id);
    jb_puts(&line, ",\"error\":{\"code\":");
    char num[16];
    snprintf(num, sizeof num, "%d", code);
    jb_puts(&line, num);
    jb_puts(&line, ",\"message\":");
    jb_cstr(&line, message);
    jb_puts(&line, ",\"data\":{\"code\":");
    jb_cstr(&line, data_code);
    jb_puts(&line, "}}}");
    write_line(gen, &line, now_s() + 5.0);
    free(line.p);
}

static void handle_request(uint64_t gen, const char *line, size_t len, jspan v, jspan m) {
    jspan id;
    int has_id = js_get(v, "id", &id) && !js_is_null(id);
    if (js_key_eq(m.p, m.n, "$/cancelRequest")) {
        jspan params, target;
        if (!js_get(v, "params", &params) || !js_get(params, "id", &target)) return;
        pthread_mutex_lock(&B.mu);
        for (relay *r = B.relays; r; r = r->next)
            if (r->gen == gen && r->id_len == target.n && memcmp(r->id, target.p, target.n) == 0) r->cancelled = 1;
        pthread_mutex_unlock(&B.mu);
        return;
    }
    if (!has_id) return; /* other notifications mean nothing to the bridge */
    if (!(m.n > 7 && memcmp(m.p, "\"host.", 6) == 0)) {
        char *name = js_strdup(m);
        jbuf msg = {0};
        jb_puts(&msg, "method not found: ");
        jb_puts(&msg, name ? name : "?");
        answer_now(gen, id, -32601, "method_not_found", msg.p ? msg.p : "method not found");
        free(msg.p);
        free(name);
        return;
    }
    relay_job *j = calloc(1, sizeof *j);
    char *copy = malloc(len + 1);
    char *idc = malloc(id.n + 1);
    if (!j || !copy || !idc) {
        free(j);
        free(copy);
        free(idc);
        answer_now(gen, id, -32001, "limit_exceeded", "bridge out of memory");
        return;
    }
    memcpy(copy, line, len);
    copy[len] = 0;
    memcpy(idc, id.p, id.n);
    j->line = copy;
    j->len = len;
    j->gen = gen;
    j->r.id = idc;
    j->r.id_len = id.n;
    j->r.gen = gen;
    pthread_mutex_lock(&B.mu);
    j->r.next = B.relays;
    B.relays = &j->r;
    pthread_mutex_unlock(&B.mu);
    if (spawn_worker(relay_main, j) != 0) {
        pthread_mutex_lock(&B.mu);
        for (relay **pp = &B.relays; *pp; pp = &(*pp)->next)
            if (*pp == &j->r) {
                *pp = j->r.next;
                break;
            }
        pthread_mutex_unlock(&B.mu);
        answer_now(gen, id, -32001, "limit_exceeded", "too many relayed host calls in the bridge");
        free(idc);
        free(copy);
        free(j);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Reader: one per connection
 */

typedef struct {
    int fd;
    uint64_t gen;
} reader_arg;

static void dispatch_line(uint64_t gen, char *line, size_t len) {
    jspan v, m, id;
    uint64_t n;
    if (len && line[len - 1] == '\r') len--;
    if (!js_valid(line, len, &v) || !js_is_object(v)) {
        if (len) logf_("dropped a line from hostd that is not a JSON object");
        return;
    }
    if (js_get(v, "method", &m) && js_is_string(m)) {
        handle_request(gen, line, len, v, m);
        return;
    }
    if (!js_get(v, "id", &id) || !js_u64(id, &n)) return;
    char *copy = malloc(len + 1);
    if (!copy) return;
    memcpy(copy, line, len);
    copy[len] = 0;
    pthread_mutex_lock(&B.mu);
    waiter *w = *bucket(n);
    while (w && w->id != n) w = w->next;
    if (w && w->gen == gen && w->state == W_WAITING) {
        unlink_waiter(w);
        w->answer = copy;
        w->answer_len = len;
        w->state = W_ANSWERED;
        pthread_cond_signal(&w->cv);
        copy = NULL;
    }
    pthread_mutex_unlock(&B.mu);
    free(copy); /* unmatched (timed out, or nobody waits): dropped */
}

static void fail_waiters(uint64_t gen) {
    for (int i = 0; i < NBUCKETS; i++)
        for (waiter **pp = &B.buckets[i]; *pp;) {
            waiter *w = *pp;
            if (w->gen == gen) {
                *pp = w->next;
                w->state = W_GONE;
                pthread_cond_signal(&w->cv);
            } else {
                pp = &w->next;
            }
        }
}

static void *reader_main(void *p) {
    reader_arg a = *(reader_arg *)p;
    free(p);
    size_t cap = 64 << 10, n = 0, scanned = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap >= MAX_LINE) {
                logf_("a line from hostd is longer than %zu bytes; cutting the connection", MAX_LINE);
                break;
            }
            char *q = realloc(buf, cap * 2);
            if (!q) break;
            buf = q;
            cap *= 2;
        }
        ssize_t r = recv(a.fd, buf + n, cap - n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
        size_t start = 0;
        for (;;) {
            char *nl = memchr(buf + scanned, '\n', n - scanned);
            if (!nl) {
                scanned = n;
                break;
            }
            size_t end = (size_t)(nl - buf);
            dispatch_line(a.gen, buf + start, end - start);
            start = end + 1;
            scanned = start;
        }
        if (start) {
            memmove(buf, buf + start, n - start);
            n -= start;
            scanned -= start;
        }
    }
    free(buf);
    pthread_mutex_lock(&B.mu);
    if (B.gen == a.gen) B.conn_dead = 1;
    fail_waiters(a.gen); /* every call on this connection answers plugin_unavailable now */
    pthread_cond_broadcast(&B.sup_cv);
    pthread_mutex_unlock(&B.mu);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Spawning hostd
 */

static char *find_on_path(const char *name) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    size_t nl = strlen(name);
    while (*path) {
        const char *c = strchr(path, ':');
        size_t dl = c ? (size_t)(c - path) : strlen(path);
        if (dl > 0) {
            char *full = malloc(dl + nl + 2);
            if (!full) return NULL;
            memcpy(full, path, dl);
            full[dl] = '/';
            memcpy(full + dl + 1, name, nl + 1);
            struct stat st;
            if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0) return full;
            free(full);
        }
        path += dl;
        if (*path == ':') path++;
    }
    return NULL;
}

/* $HOSTD_BIN, else hostd on PATH, else the path compiled in. */
static char *hostd_path(void) {
    const char *env = getenv("HOSTD_BIN");
    if (env && *env) return strchr(env, '/') ? strdup(env) : find_on_path(env);
    char *p = find_on_path("hostd");
    if (p) return p;
    if (HOSTD_DEFAULT_PATH[0]) return strdup(HOSTD_DEFAULT_PATH);
    return NULL;
}

/* Forks and execs `hostd bridge` with the socketpair as stdin/stdout. Called only from the
 * supervisor thread. Returns our end of the socketpair or -1 (with spawn_error set). */
static int spawn_hostd(pid_t *pid_out, char *err, size_t errlen) {
    char *path = hostd_path();
    if (!path) {
        snprintf(err, errlen, "hostd: cannot find hostd ($HOSTD_BIN is not set and no hostd on PATH)");
        return -1;
    }
    int sv[2], ep[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, errlen, "hostd: socketpair: %s", strerror(errno));
        free(path);
        return -1;
    }
    if (pipe2(ep, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "hostd: pipe: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        free(path);
        return -1;
    }
    char *argv[] = {path, "bridge", NULL};
    extern char **environ;
    char **envp = environ;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: async-signal-safe calls only until execve. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        setpgid(0, 0); /* terminal signals go to the proxy; the bridge decides hostd's end */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int s = 1; s < 65; s++) sigaction(s, &dfl, NULL);
        if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0) _exit(127);
#ifdef SYS_close_range
        syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
#endif
        execve(path, argv, envp);
        int e = errno;
        ssize_t w = write(ep[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    int fork_errno = errno;
    close(sv[1]);
    close(ep[1]);
    if (pid < 0) {
        snprintf(err, errlen, "hostd: fork: %s", strerror(fork_errno));
        close(sv[0]);
        close(ep[0]);
        free(path);
        return -1;
    }
    int child_errno = 0;
    ssize_t r;
    do r = read(ep[0], &child_errno, sizeof child_errno);
    while (r < 0 && errno == EINTR);
    close(ep[0]);
    if (r == (ssize_t)sizeof child_errno) {
        snprintf(err, errlen, "hostd: cannot run %s: %s", path, strerror(child_errno));
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        close(sv[0]);
        free(path);
        return -1;
    }
    free(path);
    *pid_out = pid;
    return sv[0];
}

/* Waits up to grace_s for hostd to exit, then SIGKILLs it; always reaps it. Only our own pid. */
static void reap_hostd(pid_t pid, double grace_s) {
    double until = now_s() + grace_s;
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) return;
        if (now_s() >= until) break;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------------------------------
 * Registration (start + register), shared by the proxy's call and the supervisor's replay
 */

static void jb_start_params(jbuf *b, jspan params_obj) {
    jspan cy;
    jb_puts(b, "{\"plugin_id\":");
    jb_cstr(b, B.plugin_id);
    jb_puts(b, ",\"config_yaml\":");
    if (js_get(params_obj, "config_yaml", &cy) && js_is_string(cy)) jb_span(b, cy);
    else jb_puts(b, "\"\"");
    jb_puts(b, "}");
}

static void jb_invoke_params(jbuf *b, const char *method, const char *params, size_t len, double timeout_s) {
    int stream = strcmp(method, "executor.execute_stream") == 0 || strcmp(method, "server_tool.handle_stream") == 0;
    char num[32];
    jb_puts(b, "{\"plugin_id\":");
    jb_cstr(b, B.plugin_id);
    jb_puts(b, ",\"method\":");
    jb_cstr(b, method);
    jb_puts(b, ",\"params\":");
    jb_put(b, params, len);
    if (stream) jb_puts(b, ",\"stream\":true");
    snprintf(num, sizeof num, "%.3f", timeout_s);
    jb_puts(b, ",\"timeout_s\":");
    jb_puts(b, num);
    jb_puts(b, "}");
}

static double current_timeout(void) {
    pthread_mutex_lock(&B.mu);
    double t = B.timeout_s;
    pthread_mutex_unlock(&B.mu);
    return t;
}

/* hostd.bridge.start. Returns 0, or -1 with *env_out set to an error envelope (may be NULL for
 * a lost connection). */
static int bridge_start(uint64_t gen, jspan params_obj, jbuf *env_out) {
    jbuf p = {0};
    char *ans = NULL;
    size_t n = 0;
    jb_start_params(&p, params_obj);
    int rc = rpc_call(gen, "hostd.bridge.start", &p, now_s() + current_timeout(), &ans, &n, NULL);
    free(p.p);
    if (rc == CALL_TIMEOUT) {
        jb_puts(env_out, "{\"ok\":false,\"error\":{\"code\":\"invalid_config\",\"message\":\"hostd: hostd.bridge.start timed out\"}}");
        return -1;
    }
    if (rc != CALL_OK) return -1;
    jspan v, res, err, t;
    js_valid(ans, n, &v);
    if (js_get(v, "result", &res)) {
        if (js_is_object(res) && js_get(res, "timeout_s", &t)) {
            double d = js_number(t, 0);
            if (d > 0) {
                pthread_mutex_lock(&B.mu);
                B.timeout_s = d;
                pthread_mutex_unlock(&B.mu);
            }
        }
        free(ans);
        return 0;
    }
    if (js_get(v, "error", &err) && js_is_object(err)) jb_envelope_error(env_out, err, "invalid_config");
    else jb_puts(env_out, "{\"ok\":false,\"error\":{\"code\":\"invalid_config\",\"message\":\"hostd: invalid answer to hostd.bridge.start\"}}");
    free(ans);
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Stream pumps: hostd.stream.read S → the proxy's host.stream.emit / close on its stream id
 */

typedef struct {
    uint64_t gen;
    char *sid;     /* S as a JSON string literal */
    size_t sid_n;
    char *psid;    /* the proxy's stream id as a JSON string literal */
    size_t psid_n;
} pump_job;

static void proxy_close(pump_job *j, const char *error) {
    jbuf b = {0};
    jb_puts(&b, "{\"stream_id\":");
    jb_put(&b, j->psid, j->psid_n);
    if (error) {
        jb_puts(&b, ",\"error\":");
        jb_cstr(&b, error);
    }
    jb_puts(&b, "}");
    host_simple("host.stream.close", &b);
    free(b.p);
}

static void hostd_close(pump_job *j) {
    jbuf b = {0};
    jb_puts(&b, "{\"stream_id\":");
    jb_put(&b, j->sid, j->sid_n);
    jb_puts(&b, "}");
    rpc_forget(j->gen, "hostd.stream.close", &b);
    free(b.p);
}

static void *pump_main(void *p) {
    pump_job *j = p;
    jbuf rp = {0};
    jb_puts(&rp, "{\"stream_id\":");
    jb_put(&rp, j->sid, j->sid_n);
    jb_puts(&rp, "}");
    for (;;) {
        char *ans = NULL;
        size_t n = 0;
        /* A read waits as long as the stream is quiet; hostd reaps idle streams itself. */
        int rc = rpc_call(j->gen, "hostd.stream.read", &rp, now_s() + 1e9, &ans, &n, NULL);
        if (rc != CALL_OK) {
            proxy_close(j, "plugin disconnected");
            break;
        }
        jspan v, res, payload = {0}, error = {0}, done = {0}, err;
        js_valid(ans, n, &v);
        if (!js_get(v, "result", &res) || !js_is_object(res)) {
            jspan msg;
            char *m = NULL;
            if (js_get(v, "error", &err) && js_get(err, "message", &msg)) m = js_strdup(msg);
            proxy_close(j, m && *m ? m : "stream read failed");
            free(m);
            free(ans);
            break;
        }
        int has_payload = js_get(res, "payload", &payload) && js_is_string(payload) && payload.n > 2;
        int has_error = js_get(res, "error", &error) && js_is_string(error) && error.n > 2;
        int is_done = js_get(res, "done", &done) && js_is_true(done);
        int stop = 0;
        if (has_error) {
            jbuf e = {0};
            jb_puts(&e, "{\"stream_id\":");
            jb_put(&e, j->psid, j->psid_n);
            if (has_payload) {
                jb_puts(&e, ",\"payload\":");
                jb_span(&e, payload);
            }
            jb_puts(&e, ",\"error\":");
            jb_span(&e, error);
            jb_puts(&e, "}");
            host_simple("host.stream.emit", &e);
            free(e.p);
            proxy_close(j, NULL);
            stop = 1;
        } else {
            if (has_payload) {
                jbuf e = {0};
                jb_puts(&e, "{\"stream_id\":");
                jb_put(&e, j->psid, j->psid_n);
                jb_puts(&e, ",\"payload\":");
                jb_span(&e, payload);
                jb_puts(&e, "}");
                int ok = host_simple("host.stream.emit", &e) == 0;
                free(e.p);
                if (!ok) {
                    if (!is_done) hostd_close(j);
                    stop = 1;
                }
            }
            if (!stop && is_done) {
                proxy_close(j, NULL);
                stop = 1;
            }
        }
        free(ans);
        if (stop) break;
    }
    free(rp.p);
    free(j->sid);
    free(j->psid);
    free(j);
    return NULL;
}

static char *dup_span(jspan s) {
    char *c = malloc(s.n + 1);
    if (c) {
        memcpy(c, s.p, s.n);
        c[s.n] = 0;
    }
    return c;
}

/* After a streaming invoke: pump S to the proxy's stream, or close S when there is nowhere to
 * deliver it. */
static void start_pump(uint64_t gen, jspan sid, jspan psid, int have_psid) {
    pump_job *j = calloc(1, sizeof *j);
    if (j) {
        j->gen = gen;
        j->sid = dup_span(sid);
        j->sid_n = sid.n;
        j->psid = have_psid ? dup_span(psid) : NULL;
        j->psid_n = psid.n;
    }
    if (j && j->sid && j->psid && spawn_worker(pump_main, j) == 0) return;
    if (j && j->sid) hostd_close(j);
    if (j && j->psid) proxy_close(j, "bridge: too many open streams");
    if (j) {
        free(j->sid);
        free(j->psid);
        free(j);
    }
}

/* ---------------------------------------------------------------------------------------------
 * One proxy → plugin call through hostd.invoke
 */

/* Invokes `method` on the plugin; writes the envelope into *env. Returns 1 when the call
 * succeeded (ok:true). */
static int invoke(uint64_t gen, const char *method, const char *params, size_t len, double timeout_s, jbuf *env) {
    jbuf p = {0};
    char *ans = NULL;
    size_t n = 0;
    jb_invoke_params(&p, method, params, len, timeout_s);
    int rc = rpc_call(gen, "hostd.invoke", &p, now_s() + timeout_s, &ans, &n, &gen);
    free(p.p);
    if (rc == CALL_TIMEOUT) {
        jb_puts(env, "{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":\"plugin call timed out\"}}");
        return 0;
    }
    if (rc != CALL_OK) {
        jb_puts(env, "{\"ok\":false,\"error\":{\"code\":\"plugin_unavailable\",\"message\":\"plugin disconnected\",\"retryable\":true}}");
        return 0;
    }
    jspan v, res, inner, err, sid, psid;
    int ok = 0;
    js_valid(ans, n, &v);
    if (js_get(v, "result", &res) && js_is_object(res)) {
        jb_puts(env, "{\"ok\":true,\"result\":");
        if (js_get(res, "result", &inner) && !js_is_null(inner)) jb_span(env, inner);
        else jb_puts(env, "{}");
        jb_puts(env, "}");
        ok = 1;
        if (js_get(res, "stream_id", &sid) && js_is_string(sid) && sid.n > 2) {
            int have = js_get(res, "invoker_stream_id", &psid) && js_is_string(psid) && psid.n > 2;
            start_pump(gen, sid, psid, have);
        }
    } else if (js_get(v, "error", &err) && js_is_object(err)) {
        jb_envelope_error(env, err, "host_call_failed");
    } else {
        jb_puts(env, "{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":\"invalid answer from hostd\"}}");
    }
    free(ans);
    return ok;
}

/* ---------------------------------------------------------------------------------------------
 * Supervisor
 */

static void cond_wait_until(double at) {
    struct timespec ts = abs_ts(at);
    pthread_cond_timedwait(&B.sup_cv, &B.mu, &ts);
}

/* Replays start + the last successful register on connection gen. 0 on success. */
static int replay(uint64_t gen) {
    const char *method = "plugin.register";
    pthread_mutex_lock(&B.mu);
    char *params = B.replay_params ? dup_span((jspan){B.replay_params, B.replay_params_len}) : NULL;
    size_t len = B.replay_params_len;
    pthread_mutex_unlock(&B.mu);
    int rc = -1;
    if (params) {
        jspan obj;
        jbuf env = {0};
        js_valid(params, len, &obj);
        if (bridge_start(gen, obj, &env) == 0) {
            jbuf env2 = {0};
            rc = invoke(gen, method, params, len, current_timeout(), &env2) ? 0 : -1;
            if (rc != 0) logf_("replayed %s failed: %s", method, env2.p ? env2.p : "?");
            free(env2.p);
        } else {
            logf_("replayed hostd.bridge.start failed: %s", env.p ? env.p : "lost connection");
        }
        free(env.p);
    }
    free(params);
    return rc;
}

static void *supervisor_main(void *unused) {
    (void)unused;
    double backoff = BACKOFF_MIN_S;
    pthread_mutex_lock(&B.mu);
    for (;;) {
        while (!B.stopping && !B.want_spawn) pthread_cond_wait(&B.sup_cv, &B.mu);
        if (B.stopping) break;
        pthread_mutex_unlock(&B.mu);

        char err[512] = {0};
        pid_t pid = -1;
        int fd = spawn_hostd(&pid, err, sizeof err);
        pthread_mutex_lock(&B.mu);
        if (fd < 0) {
            logf_("%s", err);
            snprintf(B.spawn_error, sizeof B.spawn_error, "%s", err);
            B.spawn_seq++;
            if (!B.has_replay) B.want_spawn = 0;
            pthread_cond_broadcast(&B.sup_cv);
            if (B.want_spawn) {
                double until = now_s() + backoff;
                while (!B.stopping && now_s() < until) cond_wait_until(until);
                backoff = backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : backoff * 2;
            }
            continue;
        }
        uint64_t gen = ++B.gen;
        B.pid = pid;
        B.conn_up = 1;
        B.conn_dead = 0;
        B.conn_fd = fd;
        int replaying = B.has_replay;
        pthread_mutex_unlock(&B.mu);

        pthread_mutex_lock(&B.wmu);
        B.w_fd = fd;
        B.w_gen = gen;
        pthread_mutex_unlock(&B.wmu);

        pthread_t reader;
        reader_arg *ra = malloc(sizeof *ra);
        int reader_ok = ra != NULL;
        if (ra) {
            ra->fd = fd;
            ra->gen = gen;
            if (pthread_create(&reader, NULL, reader_main, ra) != 0) {
                free(ra);
                reader_ok = 0;
            }
        }
        double started = now_s();
        int up = reader_ok && (!replaying || replay(gen) == 0);

        pthread_mutex_lock(&B.mu);
        if (up && !B.conn_dead) {
            B.ready = 1;
            if (replaying) logf_("hostd restarted (pid %d); registration replayed", (int)pid);
        }
        B.spawn_seq++;
        B.spawn_error[0] = 0;
        pthread_cond_broadcast(&B.sup_cv);
        while (up && !B.stopping && !B.conn_dead) pthread_cond_wait(&B.sup_cv, &B.mu);
        int stopping = B.stopping;
        B.ready = 0;
        B.conn_fd = -1;
        pthread_mutex_unlock(&B.mu);

        /* Tear the connection down: wake the reader and writers, join, close, reap hostd. */
        shutdown(fd, SHUT_RDWR);
        if (reader_ok) pthread_join(reader, NULL);
        pthread_mutex_lock(&B.wmu);
        B.w_fd = -1;
        close(fd);
        pthread_mutex_unlock(&B.wmu);
        reap_hostd(pid, stopping ? HOSTD_EXIT_S : 1.0);
        if (!stopping) logf_("hostd (pid %d) is gone", (int)pid);

        pthread_mutex_lock(&B.mu);
        B.conn_up = 0;
        B.pid = -1;
        fail_waiters(gen);
        pthread_cond_broadcast(&B.sup_cv);
        if (B.stopping) break;
        B.want_spawn = B.has_replay;
        if (now_s() - started >= BACKOFF_RESET_S) backoff = BACKOFF_MIN_S;
        if (B.want_spawn) {
            double until = now_s() + backoff;
            while (!B.stopping && now_s() < until) cond_wait_until(until);
            backoff = backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : backoff * 2;
        }
    }
    pthread_mutex_unlock(&B.mu);
    return NULL;
}

/* Starts hostd if it is not running and waits until it serves. 0, or -1 with the reason. */
static int ensure_started(char *why, size_t whylen) {
    pthread_mutex_lock(&B.mu);
    if (B.ready) {
        pthread_mutex_unlock(&B.mu);
        return 0;
    }
    if (B.stopping || B.conn_up || (B.want_spawn && B.has_replay)) {
        /* restarting (or replaying): the proxy gets plugin_unavailable meanwhile */
        pthread_mutex_unlock(&B.mu);
        snprintf(why, whylen, "plugin disconnected");
        return -1;
    }
    if (!B.sup_started) {
        if (pthread_create(&B.sup, NULL, supervisor_main, NULL) != 0) {
            pthread_mutex_unlock(&B.mu);
            snprintf(why, whylen, "hostd: cannot start the bridge thread");
            return -1;
        }
        B.sup_started = 1;
    }
    uint64_t seq = B.spawn_seq;
    B.want_spawn = 1;
    pthread_cond_broadcast(&B.sup_cv);
    while (!B.stopping && B.spawn_seq == seq) pthread_cond_wait(&B.sup_cv, &B.mu);
    int ok = B.ready;
    if (!ok) snprintf(why, whylen, "%s", B.spawn_error[0] ? B.spawn_error : "plugin disconnected");
    pthread_mutex_unlock(&B.mu);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * The plugin table
 */

static int is_register(const char *m) {
    return strcmp(m, "plugin.register") == 0 || strcmp(m, "plugin.reconfigure") == 0;
}

static int bridge_call(const char *method, const uint8_t *req, size_t req_len, cliproxy_buffer *resp) {
    if (!resp) return 1;
    resp->ptr = NULL;
    resp->len = 0;
    if (!method) return 1;
    pthread_mutex_lock(&B.mu);
    int active = B.active && !B.stopping;
    pthread_mutex_unlock(&B.mu);
    if (!active) return give_unavailable(resp);

    const char *params = req_len ? (const char *)req : "{}";
    size_t len = req_len ? req_len : 2;
    jspan obj;
    if (!js_valid(params, len, &obj) || !js_is_object(obj)) {
        jbuf b = {0};
        jbuf m = {0};
        jb_puts(&m, "decode ");
        jb_puts(&m, method);
        jb_puts(&m, " request: invalid JSON");
        jb_puts(&b, "{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":");
        jb_str(&b, m.p ? m.p : "", m.n);
        jb_puts(&b, "}}");
        free(m.p);
        return give(resp, &b);
    }
    params = obj.p; /* without surrounding whitespace */
    len = obj.n;

    jbuf env = {0};
    if (is_register(method)) {
        char why[512];
        if (ensure_started(why, sizeof why) != 0) {
            int unavailable = strcmp(why, "plugin disconnected") == 0;
            return give_error(resp, unavailable ? "plugin_unavailable" : "invalid_config", why, unavailable);
        }
        if (bridge_start(0, obj, &env) != 0) {
            if (env.n == 0) return give_unavailable(resp);
            return give(resp, &env);
        }
        if (invoke(0, method, params, len, current_timeout(), &env)) {
            char *p = dup_span(obj);
            pthread_mutex_lock(&B.mu);
            if (p) {
                free(B.replay_params);
                B.replay_params = p;
                B.replay_params_len = len;
                B.has_replay = 1;
            }
            pthread_mutex_unlock(&B.mu);
        }
        return give(resp, &env);
    }
    invoke(0, method, params, len, current_timeout(), &env);
    return give(resp, &env);
}

static void bridge_free(void *ptr, size_t len) {
    (void)len;
    free(ptr);
}

static void bridge_shutdown(void) {
    pthread_mutex_lock(&B.mu);
    if (!B.active || B.stopping) {
        pthread_mutex_unlock(&B.mu);
        return;
    }
    int ready = B.ready;
    pthread_mutex_unlock(&B.mu);

    if (ready) {
        jbuf env = {0};
        invoke(0, "plugin.shutdown", "{}", 2, SHUTDOWN_CALL_S, &env);
        free(env.p);
    }

    pthread_mutex_lock(&B.mu);
    B.stopping = 1;
    B.ready = 0;
    if (B.conn_fd >= 0) shutdown(B.conn_fd, SHUT_RDWR); /* ends a replay or start in progress */
    int sup = B.sup_started;
    pthread_cond_broadcast(&B.sup_cv);
    pthread_mutex_unlock(&B.mu);
    if (sup) pthread_join(B.sup, NULL); /* closes the socketpair and reaps hostd */

    /* Workers end once their calls fail (the connection is gone); relays finish the proxy's call. */
    for (;;) {
        reap_workers();
        pthread_mutex_lock(&B.mu);
        int left = B.nworkers, finished = 0;
        for (worker *w = B.workers; w; w = w->next) finished |= w->done;
        if (left && !finished) pthread_cond_wait(&B.sup_cv, &B.mu); /* worker_main broadcasts */
        pthread_mutex_unlock(&B.mu);
        if (!left) break;
    }

    pthread_mutex_lock(&B.mu);
    free(B.replay_params);
    B.replay_params = NULL;
    B.replay_params_len = 0;
    B.has_replay = 0;
    B.sup_started = 0;
    B.want_spawn = 0;
    B.conn_up = B.conn_dead = 0;
    B.stopping = 0;
    B.active = 0;
    B.host_call = NULL;
    B.host_free = NULL;
    B.host_ctx = NULL;
    pthread_mutex_unlock(&B.mu);
}

/* ---------------------------------------------------------------------------------------------
 * Plugin id from our own file name (§14's rule)
 */

static int valid_id(const char *s, size_t n) {
    if (n == 0 || n > 128) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return 0;
    }
    return 1;
}

static int valid_version(const char *s, size_t n) {
    if (n == 0 || !(s[0] >= '0' && s[0] <= '9')) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '+' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

static int ends_with_ci(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++) {
        char a = s[n - k + i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != suf[i]) return 0;
    }
    return 1;
}

/* Writes the plugin id of file `path` into out; 0, or -1 when the name gives no valid id. */
static int plugin_id_from_path(const char *path, char *out, size_t outlen) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    static const char *exts[] = {".so", ".dylib", ".dll"};
    for (size_t i = 0; i < 3; i++)
        if (ends_with_ci(base, n, exts[i])) {
            n -= strlen(exts[i]);
            break;
        }
    size_t idn = n;
    for (size_t i = n; i >= 2; i--) { /* the last "-v" at an index > 0 */
        if (base[i - 2] == '-' && base[i - 1] == 'v') {
            size_t at = i - 2;
            if (at > 0 && valid_id(base, at) && valid_version(base + i, n - i)) idn = at;
            break;
        }
    }
    if (!valid_id(base, idn) || idn + 1 > outlen) return -1;
    memcpy(out, base, idn);
    out[idn] = 0;
    return 0;
}

int cliproxy_plugin_init(const cliproxy_host_api *host, cliproxy_plugin_api *plugin) {
    pthread_once(&once, init_conds);
    Dl_info info;
    const char *path = "?";
    if (dladdr((void *)&cliproxy_plugin_init, &info) && info.dli_fname) path = info.dli_fname;
    if (!host || !plugin || !host->call) {
        fprintf(stderr, "hostd-bridge: cliproxy_plugin_init: incomplete host table\n");
        return 1;
    }
    if (host->abi_version != ABI_VERSION) {
        fprintf(stderr, "hostd-bridge: host ABI version %u is not supported (want %u)\n", host->abi_version,
                ABI_VERSION);
        return 1;
    }
    char id[129];
    if (plugin_id_from_path(path, id, sizeof id) != 0) {
        fprintf(stderr, "hostd-bridge: %s: the file name gives no valid plugin id\n", path);
        return 1;
    }
    pthread_mutex_lock(&B.mu);
    if (B.active) {
        char first[129];
        snprintf(first, sizeof first, "%s", B.plugin_id);
        pthread_mutex_unlock(&B.mu);
        fprintf(stderr,
                "hostd-bridge: %s is already loaded in this process as plugin %s; each plugin needs its own copy "
                "of hostd-bridge.so (a symlink or hard link loads the same library)\n",
                path, first);
        return 1;
    }
    B.active = 1;
    memcpy(B.plugin_id, id, sizeof id);
    B.host_ctx = host->host_ctx;
    B.host_call = host->call;
    B.host_free = host->free_buffer;
    B.timeout_s = DEFAULT_TIMEOUT_S;
    pthread_mutex_unlock(&B.mu);
    plugin->abi_version = ABI_VERSION;
    plugin->call = bridge_call;
    plugin->free_buffer = bridge_free;
    plugin->shutdown = bridge_shutdown;
    return 0;
}
