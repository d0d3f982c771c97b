/* Test harness: loads a native CLIProxyAPI plugin as the proxy's loader does
 * (internal/pluginhost/loader_unix.go: dlopen(RTLD_NOW|RTLD_LOCAL), cliproxy_plugin_init with a
 * host table of ABI version 1, then call / free_buffer / shutdown from many threads), with a host
 * table that records every host.* call and answers from a script.
 *
 * It mimics the loader; it is not the proxy. Driven by tests/test_bridge.py: commands on stdin,
 * one per line; events on stdout, one JSON object per line:
 *   load PATH                         -> {"event":"loaded","rc":N,"error"?:...}
 *   init2 [PATH]                      -> {"event":"init2","rc":N}   a second init: on the same handle,
 *                                        or on PATH's handle (a symlink gives the same one)
 *   script METHOD ENVELOPE            host calls of METHOD answer ENVELOPE (raw bytes)
 *   hold METHOD / release METHOD      host calls of METHOD wait until released
 *   fail METHOD RC                    host calls of METHOD return RC with no buffer
 *   call TAG METHOD PARAMS            a call on its own thread -> {"event":"answer","tag",...}
 *   burst N TAG METHOD PARAMS         N threads released at once; tags TAG-0 … TAG-(N-1); %TAG% in
 *                                        PARAMS becomes each thread's tag
 *   wait                              joins every call thread -> {"event":"idle"}
 *   shutdown                          -> {"event":"shutdown"}
 *   close                             dlclose -> {"event":"closed"}
 *   echo TEXT                         -> {"event":"echo","text":TEXT} (a sentinel)
 *   exit                              _exit(0) at once, without shutdown
 * Host calls print {"event":"host_call","method":M,"params":"<raw request as a string>"}.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

typedef int (*init_fn)(const cliproxy_host_api *, cliproxy_plugin_api *);

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void *handle;
static init_fn init;
static cliproxy_host_api host;
static cliproxy_plugin_api api;
static long host_ctx_value = 42;

typedef struct rule {
    char *method;
    char *answer; /* envelope, or NULL */
    int held;
    int fail_rc;
    struct rule *next;
} rule;
static rule *rules;

typedef struct job {
    pthread_t th;
    char *tag, *method, *params;
    pthread_barrier_t *barrier;
    struct job *next;
} job;
static job *jobs;

static void put_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void emit(const char *event, const char *k1, const char *v1, size_t n1, const char *k2, const char *v2,
                 size_t n2, const char *extra) {
    pthread_mutex_lock(&out_mu);
    fprintf(stdout, "{\"event\":\"%s\"", event);
    if (k1) {
        fprintf(stdout, ",\"%s\":", k1);
        put_str(stdout, v1, n1);
    }
    if (k2) {
        fprintf(stdout, ",\"%s\":", k2);
        put_str(stdout, v2, n2);
    }
    if (extra) fputs(extra, stdout);
    fputs("}\n", stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static rule *find_rule(const char *method, int create) {
    for (rule *r = rules; r; r = r->next)
        if (strcmp(r->method, method) == 0) return r;
    if (!create) return NULL;
    rule *r = calloc(1, sizeof *r);
    r->method = strdup(method);
    r->next = rules;
    rules = r;
    return r;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* The host table: records, then answers as scripted. */
static int host_call(void *ctx, const char *method, const uint8_t *req, size_t len, cliproxy_buffer *resp) {
    resp->ptr = NULL;
    resp->len = 0;
    if (ctx != &host_ctx_value || !method) return 1;
    emit("host_call", "method", method, strlen(method), "params", (const char *)req, req ? len : 0, NULL);
    char *answer = NULL;
    int fail_rc = 0;
    pthread_mutex_lock(&mu);
    rule *r = find_rule(method, 0);
    while (r && r->held) pthread_cond_wait(&cv, &mu);
    if (r && r->answer) answer = strdup(r->answer);
    if (r) fail_rc = r->fail_rc;
    pthread_mutex_unlock(&mu);
    if (fail_rc) return fail_rc;
    if (!answer) {
        if (strcmp(method, "host.stream.emit") == 0 || strcmp(method, "host.stream.close") == 0) {
            answer = strdup("{\"ok\":true,\"result\":{}}");
        } else {
            char buf[512];
            snprintf(buf, sizeof buf,
                     "{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":\"unsupported host callback %s\"}}",
                     method);
            answer = strdup(buf);
        }
    }
    resp->ptr = answer;
    resp->len = strlen(answer);
    return 0;
}

static void host_free(void *ptr, size_t len) {
    (void)len;
    free(ptr);
}

static void *job_main(void *p) {
    job *j = p;
    if (j->barrier) pthread_barrier_wait(j->barrier);
    cliproxy_buffer resp = {0};
    size_t len = strlen(j->params);
    /* As the proxy does: a NULL request for empty bytes, the response copied then freed. */
    int rc = api.call(j->method, len ? (const uint8_t *)j->params : NULL, len, &resp);
    char *copy = resp.ptr && resp.len ? dupn(resp.ptr, resp.len) : strdup("");
    if (resp.ptr) api.free_buffer(resp.ptr, resp.len);
    char extra[32];
    snprintf(extra, sizeof extra, ",\"rc\":%d", rc);
    emit("answer", "tag", j->tag, strlen(j->tag), "body", copy, strlen(copy), extra);
    free(copy);
    return NULL;
}

static char *substitute_tag(const char *params, const char *tag) {
    const char *at = strstr(params, "%TAG%");
    if (!at) return strdup(params);
    size_t n = strlen(params) - 5 + strlen(tag);
    char *out = malloc(n + 1);
    snprintf(out, n + 1, "%.*s%s%s", (int)(at - params), params, tag, at + 5);
    return out;
}

static void start_job(const char *tag, const char *method, const char *params, pthread_barrier_t *barrier) {
    job *j = calloc(1, sizeof *j);
    j->tag = strdup(tag);
    j->method = strdup(method);
    j->params = substitute_tag(params, tag);
    j->barrier = barrier;
    j->next = jobs;
    jobs = j;
    pthread_create(&j->th, NULL, job_main, j);
}

static void join_jobs(void) {
    while (jobs) {
        job *j = jobs;
        jobs = j->next;
        pthread_join(j->th, NULL);
        free(j->tag);
        free(j->method);
        free(j->params);
        free(j);
    }
}

/* Splits off the next space-separated word of *s. */
static char *word(char **s) {
    while (**s == ' ') (*s)++;
    char *w = *s;
    char *sp = strchr(w, ' ');
    if (sp) {
        *sp = 0;
        *s = sp + 1;
    } else {
        *s = w + strlen(w);
    }
    return w;
}

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    pthread_barrier_t *barriers[64];
    int nbarriers = 0;
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        char *rest = line;
        char *cmd = word(&rest);
        if (strcmp(cmd, "load") == 0) {
            handle = dlopen(rest, RTLD_NOW | RTLD_LOCAL);
            if (!handle) {
                const char *e = dlerror();
                emit("loaded", "error", e, strlen(e), NULL, NULL, 0, ",\"rc\":-1");
                continue;
            }
            init = (init_fn)(uintptr_t)dlsym(handle, "cliproxy_plugin_init");
            if (!init) {
                emit("loaded", "error", "missing cliproxy_plugin_init", 28, NULL, NULL, 0, ",\"rc\":-1");
                continue;
            }
            host.abi_version = 1;
            host.host_ctx = &host_ctx_value;
            host.call = host_call;
            host.free_buffer = host_free;
            memset(&api, 0, sizeof api);
            int rc = init(&host, &api);
            char extra[96];
            snprintf(extra, sizeof extra, ",\"rc\":%d,\"abi\":%u,\"complete\":%s", rc, api.abi_version,
                     api.call && api.free_buffer && api.shutdown ? "true" : "false");
            emit("loaded", NULL, NULL, 0, NULL, NULL, 0, extra);
        } else if (strcmp(cmd, "init2") == 0) {
            cliproxy_plugin_api other = {0};
            void *h2 = *rest ? dlopen(rest, RTLD_NOW | RTLD_LOCAL) : NULL;
            init_fn f = h2 ? (init_fn)(uintptr_t)dlsym(h2, "cliproxy_plugin_init") : init;
            int rc = f ? f(&host, &other) : -1;
            /* As the proxy does after a failed init: call shutdown if it was set, then dlclose. */
            if (rc != 0 && other.shutdown) other.shutdown();
            char extra[128];
            snprintf(extra, sizeof extra, ",\"rc\":%d,\"filled\":%s,\"same_handle\":%s", rc,
                     other.call || other.shutdown ? "true" : "false", h2 == handle ? "true" : "false");
            if (h2) dlclose(h2);
            emit("init2", NULL, NULL, 0, NULL, NULL, 0, extra);
        } else if (strcmp(cmd, "script") == 0) {
            char *m = word(&rest);
            pthread_mutex_lock(&mu);
            rule *r = find_rule(m, 1);
            free(r->answer);
            r->answer = strdup(rest);
            pthread_mutex_unlock(&mu);
        } else if (strcmp(cmd, "fail") == 0) {
            char *m = word(&rest);
            pthread_mutex_lock(&mu);
            find_rule(m, 1)->fail_rc = atoi(rest);
            pthread_mutex_unlock(&mu);
        } else if (strcmp(cmd, "hold") == 0 || strcmp(cmd, "release") == 0) {
            pthread_mutex_lock(&mu);
            find_rule(rest, 1)->held = cmd[0] == 'h';
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
        } else if (strcmp(cmd, "call") == 0) {
            char *tag = word(&rest);
            char *m = word(&rest);
            start_job(tag, m, rest, NULL);
        } else if (strcmp(cmd, "burst") == 0) {
            int count = atoi(word(&rest));
            char *tag = word(&rest);
            char *m = word(&rest);
            if (count < 1) count = 1;
            if (nbarriers == 64) continue;
            pthread_barrier_t *b = malloc(sizeof *b);
            pthread_barrier_init(b, NULL, (unsigned)count);
            barriers[nbarriers++] = b;
            for (int i = 0; i < count; i++) {
                char t[128];
                snprintf(t, sizeof t, "%s-%d", tag, i);
                start_job(t, m, rest, b);
            }
        } else if (strcmp(cmd, "wait") == 0) {
            join_jobs();
            emit("idle", NULL, NULL, 0, NULL, NULL, 0, NULL);
        } else if (strcmp(cmd, "shutdown") == 0) {
            if (api.shutdown) api.shutdown();
            emit("shutdown", NULL, NULL, 0, NULL, NULL, 0, NULL);
        } else if (strcmp(cmd, "close") == 0) {
            join_jobs();
            if (handle) dlclose(handle);
            handle = NULL;
            emit("closed", NULL, NULL, 0, NULL, NULL, 0, NULL);
        } else if (strcmp(cmd, "echo") == 0) {
            emit("echo", "text", rest, strlen(rest), NULL, NULL, 0, NULL);
        } else if (strcmp(cmd, "exit") == 0) {
            fflush(stdout);
            _exit(0);
        }
    }
    join_jobs();
    for (int i = 0; i < nbarriers; i++) {
        pthread_barrier_destroy(barriers[i]);
        free(barriers[i]);
    }
    while (rules) {
        rule *r = rules;
        rules = r->next;
        free(r->method);
        free(r->answer);
        free(r);
    }
    free(line);
    return 0;
}
