/* A CLIProxyAPI native plugin (C ABI v1) for hostd's worker tests; built at test time:
 *   cc -shared -fPIC -pthread -o plugin.so testplugin.c [-DNO_INIT | -DINIT_RC=2 | -DPLUGIN_ABI=2 | -DINCOMPLETE]
 * Each method exercises one part of PROTOCOL §14 (see tests/test_native_worker.py). The JSON
 * handling is deliberately naive: hostd sends compact JSON and the tests control the params.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct { void* ptr; size_t len; } cliproxy_buffer;
typedef struct {
    uint32_t abi_version;
    void* host_ctx;
    int (*call)(void* host_ctx, const char* method, const uint8_t* req, size_t req_len, cliproxy_buffer* resp);
    void (*free_buffer)(void* ptr, size_t len);
} cliproxy_host_api;
typedef struct {
    uint32_t abi_version;
    int (*call)(const char* method, const uint8_t* req, size_t req_len, cliproxy_buffer* resp);
    void (*free_buffer)(void* ptr, size_t len);
    void (*shutdown)(void);
} cliproxy_plugin_api;

#ifndef PLUGIN_ABI
#define PLUGIN_ABI 1
#endif
#ifndef INIT_RC
#define INIT_RC 0
#endif

static const cliproxy_host_api* host;
static int registrations;
static char last_config[512];
static pthread_mutex_t hang_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hang_cond = PTHREAD_COND_INITIALIZER;
static int shutting_down;

/* --- a growable string --- */
typedef struct { char* s; size_t len, cap; } sb;
static void sb_add_n(sb* b, const char* s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void sb_add(sb* b, const char* s) { sb_add_n(b, s, strlen(s)); }

/* --- naive JSON: the string or number after "key": in compact JSON --- */
static char* json_str(const char* json, size_t len, const char* key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    char* copy = strndup(json, len);
    char* at = strstr(copy, pat);
    char* out = NULL;
    if (at) {
        at += strlen(pat);
        char* end = at;
        while (*end && !(*end == '"' && end[-1] != '\\')) end++;
        out = strndup(at, (size_t)(end - at));
    }
    free(copy);
    return out ? out : strdup("");
}
static long json_int(const char* json, size_t len, const char* key, long dflt) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char* copy = strndup(json, len);
    char* at = strstr(copy, pat);
    long v = at ? strtol(at + strlen(pat), NULL, 10) : dflt;
    free(copy);
    return v;
}

static void respond(cliproxy_buffer* resp, const char* s) {
    size_t n = strlen(s);
    resp->ptr = malloc(n);
    memcpy(resp->ptr, s, n);
    resp->len = n;
}
static int ok_result(cliproxy_buffer* resp, const char* result) {
    sb b = {0};
    sb_add(&b, "{\"ok\":true,\"result\":");
    sb_add(&b, result);
    sb_add(&b, "}");
    respond(resp, b.s);
    free(b.s);
    return 0;
}

/* host->call with a NUL-terminated request; returns the envelope as a NUL-terminated copy ("null" if none). */
static char* call_host(const char* method, const char* req, int* rc_out) {
    cliproxy_buffer out = {0};
    int rc = host->call(host->host_ctx, method, (const uint8_t*)req, req ? strlen(req) : 0, &out);
    if (rc_out) *rc_out = rc;
    char* copy = out.ptr ? strndup(out.ptr, out.len) : strdup("null");
    if (out.ptr) host->free_buffer(out.ptr, out.len);
    return copy;
}

/* --- management.handle: host.log, host.http.do, host.model.execute_stream + reads + close --- */
static int management_handle(const char* req, size_t len, cliproxy_buffer* resp) {
    char* cb = json_str(req, len, "host_callback_id");
    char* url = json_str(req, len, "url");
    char buf[4096];
    sb b = {0};
    sb_add(&b, "{\"host_callback_id\":\"");
    sb_add(&b, cb);
    sb_add(&b, "\",\"log\":");
    snprintf(buf, sizeof buf,
             "{\"level\":\"info\",\"message\":\"native management\",\"fields\":{\"k\":\"v\"},\"host_callback_id\":\"%s\"}", cb);
    char* r = call_host("host.log", buf, NULL);
    sb_add(&b, r);
    free(r);
    snprintf(buf, sizeof buf, "{\"method\":\"GET\",\"url\":\"%s\",\"host_callback_id\":\"%s\"}", url, cb);
    r = call_host("host.http.do", buf, NULL);
    sb_add(&b, ",\"http\":");
    sb_add(&b, r);
    free(r);
    snprintf(buf, sizeof buf,
             "{\"entry_protocol\":\"openai\",\"model\":\"m\",\"stream\":true,\"body\":\"e30=\",\"host_callback_id\":\"%s\"}", cb);
    r = call_host("host.model.execute_stream", buf, NULL);
    sb_add(&b, ",\"model\":");
    sb_add(&b, r);
    char* stream_id = json_str(r, strlen(r), "stream_id");
    free(r);
    sb_add(&b, ",\"reads\":[");
    snprintf(buf, sizeof buf, "{\"stream_id\":\"%s\"}", stream_id);
    for (int i = 0; i < 64; i++) {
        r = call_host("host.model.stream_read", buf, NULL);
        if (i) sb_add(&b, ",");
        sb_add(&b, r);
        int done = strstr(r, "\"done\":true") != NULL || strstr(r, "\"ok\":false") != NULL;
        free(r);
        if (done) break;
    }
    r = call_host("host.model.stream_close", buf, NULL);
    sb_add(&b, "],\"close\":");
    sb_add(&b, r);
    free(r);
    sb_add(&b, "}");
    ok_result(resp, b.s);
    free(b.s);
    free(stream_id);
    free(url);
    free(cb);
    return 0;
}

/* --- executor.execute_stream: answer, then emit from a thread of the plugin's own --- */
static void* emitter(void* arg) {
    char* stream_id = arg;
    const char* payloads[] = {"b25l", "dHdv", "dGhyZWU="}; /* one two three */
    char buf[512];
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "{\"stream_id\":\"%s\",\"payload\":\"%s\"}", stream_id, payloads[i]);
        free(call_host("host.stream.emit", buf, NULL));
    }
    snprintf(buf, sizeof buf, "{\"stream_id\":\"%s\"}", stream_id);
    free(call_host("host.stream.close", buf, NULL));
    free(stream_id);
    return NULL;
}
static int execute_stream(const char* req, size_t len, cliproxy_buffer* resp) {
    if (json_int(req, len, "inline", 0) == 1) {
        return ok_result(resp, "{\"chunks\":[{\"Payload\":\"aGVsbG8=\"},{\"Payload\":\"IHdvcmxk\"},{\"Err\":\"the end\"}]}");
    }
    pthread_t t;
    pthread_create(&t, NULL, emitter, json_str(req, len, "stream_id"));
    pthread_detach(t);
    return ok_result(resp, "{}");
}

/* --- many plugin threads calling host.log at once --- */
static void* log_thread(void* arg) {
    char buf[128];
    snprintf(buf, sizeof buf, "{\"level\":\"info\",\"message\":\"thread %ld\"}", (long)(intptr_t)arg);
    int rc = 1;
    char* r = call_host("host.log", buf, &rc);
    int good = rc == 0 && strncmp(r, "{\"ok\":true,\"result\":", 20) == 0;
    free(r);
    return (void*)(intptr_t)good;
}
static int threads(const char* req, size_t len, cliproxy_buffer* resp) {
    long n = json_int(req, len, "n", 4);
    pthread_t ts[64];
    if (n > 64) n = 64;
    for (long i = 0; i < n; i++) pthread_create(&ts[i], NULL, log_thread, (void*)(intptr_t)i);
    long good = 0;
    for (long i = 0; i < n; i++) {
        void* g;
        pthread_join(ts[i], &g);
        good += (long)(intptr_t)g;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "{\"ok_count\":%ld}", good);
    return ok_result(resp, buf);
}

/* --- bench.host_log: n sequential host.log round trips from a thread the plugin made ---
 * {"n": N} returns {"n","ok","total_ns"}; with "samples":1 also "samples_ns": each round trip's
 * time (bench/native.py takes its percentiles from them). */
typedef struct { long n; long ok; long long total_ns; long long* samples; } bench_args;
static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}
static void* bench_thread(void* arg) {
    bench_args* a = arg;
    long long t0 = now_ns();
    for (long i = 0; i < a->n; i++) {
        cliproxy_buffer out = {0};
        long long s = a->samples ? now_ns() : 0;
        int rc = host->call(host->host_ctx, "host.log", (const uint8_t*)"{\"level\":\"debug\",\"message\":\"bench\"}", 35, &out);
        if (a->samples) a->samples[i] = now_ns() - s;
        if (rc == 0 && out.ptr) a->ok++;
        if (out.ptr) host->free_buffer(out.ptr, out.len);
    }
    a->total_ns = now_ns() - t0;
    return NULL;
}
static int bench_host_log(const char* req, size_t len, cliproxy_buffer* resp) {
    long n = json_int(req, len, "n", 1000);
    if (n < 0) n = 0;
    bench_args a = {n, 0, 0, NULL};
    if (json_int(req, len, "samples", 0) == 1 && n > 0) a.samples = calloc((size_t)n, sizeof(long long));
    pthread_t t;
    pthread_create(&t, NULL, bench_thread, &a);
    pthread_join(t, NULL);
    sb b = {0};
    char buf[128];
    snprintf(buf, sizeof buf, "{\"n\":%ld,\"ok\":%ld,\"total_ns\":%lld", a.n, a.ok, a.total_ns);
    sb_add(&b, buf);
    if (a.samples) {
        sb_add(&b, ",\"samples_ns\":[");
        for (long i = 0; i < n; i++) {
            snprintf(buf, sizeof buf, i ? ",%lld" : "%lld", a.samples[i]);
            sb_add(&b, buf);
        }
        sb_add(&b, "]");
        free(a.samples);
    }
    sb_add(&b, "}");
    int rc = ok_result(resp, b.s);
    free(b.s);
    return rc;
}

/* --- raw host->call cases: {"rc": N, "resp": <envelope or null>} --- */
static int raw_host_call(const char* req, size_t len, cliproxy_buffer* resp) {
    char* what = json_str(req, len, "what");
    int rc = -1;
    char* r = NULL;
    if (!strcmp(what, "invalid")) {
        r = call_host("host.log", "{not json", &rc);
    } else if (!strcmp(what, "newlines")) {
        r = call_host("host.log", "{\n  \"level\": \"info\",\r\n  \"message\": \"two\\nlines\"\n}\n", &rc);
    } else if (!strcmp(what, "null_method")) {
        cliproxy_buffer out = {(void*)1, 1};
        rc = host->call(host->host_ctx, NULL, (const uint8_t*)"{}", 2, &out);
        r = strdup(out.ptr == NULL && out.len == 0 ? "\"cleared\"" : "\"not cleared\"");
    } else if (!strcmp(what, "empty")) {
        r = call_host("host.auth.list", NULL, &rc);
    } else if (!strcmp(what, "no_response")) {
        rc = host->call(host->host_ctx, "host.log", (const uint8_t*)"{}", 2, NULL);
        r = strdup("null");
    } else if (!strcmp(what, "wait")) {
        r = call_host("test.wait", "{}", &rc);
    }
    char head[64];
    snprintf(head, sizeof head, "{\"rc\":%d,\"resp\":", rc);
    sb b = {0};
    sb_add(&b, head);
    sb_add(&b, r ? r : "null");
    sb_add(&b, "}");
    ok_result(resp, b.s);
    free(b.s);
    free(r);
    free(what);
    return 0;
}

static int plugin_call(const char* method, const uint8_t* request, size_t len, cliproxy_buffer* resp) {
    const char* req = (const char*)request;
    resp->ptr = NULL;
    resp->len = 0;
    if (method == NULL) return 1;
    if (!strcmp(method, "plugin.register") || !strcmp(method, "plugin.reconfigure")) {
        char* config = json_str(req, len, "config_yaml");
        char buf[1024];
        if (!strcmp(config, "ZmFpbA==")) { /* "fail" */
            free(config);
            respond(resp, "{\"ok\":false,\"error\":{\"code\":\"invalid_config\",\"message\":\"bad config\"}}");
            return 0;
        }
        snprintf(buf, sizeof buf,
                 "{\"schema_version\":1,\"metadata\":{\"Name\":\"native-test\",\"Version\":\"0.1.0\"},"
                 "\"capabilities\":{\"management_api\":true},\"config_yaml\":\"%s\",\"registrations\":%d}",
                 config, __sync_add_and_fetch(&registrations, 1));
        snprintf(last_config, sizeof last_config, "%s", config);
        free(config);
        return ok_result(resp, buf);
    }
    if (!strcmp(method, "management.handle")) return management_handle(req, len, resp);
    if (!strcmp(method, "whoami")) {
        char buf[768];
        snprintf(buf, sizeof buf, "{\"pid\":%d,\"registrations\":%d,\"config_yaml\":\"%s\"}", (int)getpid(),
                 registrations, last_config);
        return ok_result(resp, buf);
    }
    if (!strcmp(method, "executor.execute_stream")) return execute_stream(req, len, resp);
    if (!strcmp(method, "threads")) return threads(req, len, resp);
    if (!strcmp(method, "raw_host_call")) return raw_host_call(req, len, resp);
    if (!strcmp(method, "bench.host_log")) return bench_host_log(req, len, resp);
    if (!strcmp(method, "crash.segv")) {
        volatile int* volatile p = NULL;
        *p = 1;
        raise(SIGSEGV);
    }
    if (!strcmp(method, "crash.abort")) abort();
    if (!strcmp(method, "crash.exit")) exit(3);
    if (!strcmp(method, "hang")) {
        pthread_mutex_lock(&hang_lock);
        while (!shutting_down) pthread_cond_wait(&hang_cond, &hang_lock);
        pthread_mutex_unlock(&hang_lock);
        return ok_result(resp, "{\"released\":true}");
    }
    if (!strcmp(method, "print")) {
        printf("printed by the plugin on stdout\n"); /* no fflush: the worker makes stdout line buffered */
        fprintf(stderr, "printed by the plugin on stderr\n");
        if (write(1, "written to fd 1\n", 16) < 0) return 1;
        return ok_result(resp, "{\"printed\":true}");
    }
    if (!strcmp(method, "pretty")) {
        respond(resp, "{\n  \"ok\": true,\n  \"result\": {\n    \"a\": [1,\r\n 2],\n    \"big\": 123456789012345678901234567890\n  }\n}\n");
        return 0;
    }
    if (!strcmp(method, "err.envelope")) {
        respond(resp, "{\"ok\":false,\"error\":{\"code\":\"bad_thing\",\"message\":\" went wrong \",\"http_status\":418,\"retryable\":true}}");
        return 0;
    }
    if (!strcmp(method, "err.rc_envelope")) {
        respond(resp, "{\"ok\":false,\"error\":{\"code\":\"quota\",\"message\":\"slow down\",\"http_status\":429}}");
        return 1;
    }
    if (!strcmp(method, "err.rc_text")) {
        respond(resp, "boom");
        return 7;
    }
    if (!strcmp(method, "err.empty")) return 0;
    if (!strcmp(method, "err.ok_false")) {
        respond(resp, "{\"ok\":false}");
        return 0;
    }
    if (!strcmp(method, "err.blank_message")) {
        respond(resp, "{\"ok\":false,\"error\":{\"code\":\"x\",\"message\":\"  \"}}");
        return 0;
    }
    if (!strcmp(method, "err.not_json")) {
        respond(resp, "this is not json");
        return 0;
    }
    if (!strcmp(method, "ok.no_result")) {
        respond(resp, "{\"ok\":true}");
        return 0;
    }
    /* anything else: echo the method and the params bytes as received */
    sb b = {0};
    sb_add(&b, "{\"method\":\"");
    sb_add(&b, method);
    sb_add(&b, "\",\"params\":");
    if (len) sb_add_n(&b, req, len); else sb_add(&b, "null");
    sb_add(&b, "}");
    ok_result(resp, b.s);
    free(b.s);
    return 0;
}

static void plugin_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

static void plugin_shutdown(void) {
    pthread_mutex_lock(&hang_lock);
    shutting_down = 1;
    pthread_cond_broadcast(&hang_cond);
    pthread_mutex_unlock(&hang_lock);
    fprintf(stderr, "test plugin: shutdown called\n");
}

#ifndef NO_INIT
int cliproxy_plugin_init(const cliproxy_host_api* h, cliproxy_plugin_api* plugin) {
    host = h;
    if (h->abi_version != 1) return 9;
#ifdef LOG_IN_INIT
    free(call_host("host.log", "{\"message\":\"hello from init\"}", NULL));
#endif
    plugin->abi_version = PLUGIN_ABI;
    plugin->call = plugin_call;
#ifdef INCOMPLETE
    plugin->free_buffer = NULL;
#else
    plugin->free_buffer = plugin_free;
#endif
    plugin->shutdown = plugin_shutdown;
    return INIT_RC;
}
#else
int some_other_symbol(void) { return 0; }
#endif
