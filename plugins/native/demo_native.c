/* demo_native.c: a small CLIProxyAPI native plugin (C ABI version 1) for `make demo`.
 *
 * It is an ordinary proxy plugin library: nothing in it knows about hostd. The demo builds it
 * with `cc -shared -fPIC -o demo-native.so demo_native.c` and runs it out of process with
 * `hostd run --native demo-native.so`.
 *
 * management.handle {"url": URL, "host_callback_id": ID} calls, forwarding the scope it was given,
 *   host.log      info "native management.handle" with the url as a field, then
 *   host.http.do  GET URL,
 * and answers {"plugin", "greeting", "log": <host.log's envelope>, "http": <host.http.do's envelope>}.
 * Any other method answers {"ok":false,"error":{"code":"not_found",...}}.
 *
 * The JSON handling is deliberately naive (hostd sends compact JSON; a URL with a quote in it is
 * not this demo's concern).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const cliproxy_host_api* host;

/* A growing string. */
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

/* The string after "key":" in compact JSON (a copy; "" when absent). */
static char* json_str(const char* json, size_t len, const char* key) {
    char pat[64];
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

/* host->call; the envelope it hands back as a NUL-terminated copy (an error envelope if none). */
static char* call_host(const char* method, const char* req) {
    cliproxy_buffer out = {0};
    int rc = host->call(host->host_ctx, method, (const uint8_t*)req, strlen(req), &out);
    char* copy;
    if (rc == 0 && out.ptr) {
        copy = strndup(out.ptr, out.len);
    } else {
        copy = strdup("{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":\"host->call failed\"}}");
    }
    if (out.ptr) host->free_buffer(out.ptr, out.len);
    return copy;
}

static void answer(cliproxy_buffer* resp, sb* b) {
    resp->ptr = b->s;
    resp->len = b->len;
}

static int management_handle(const char* req, size_t len, cliproxy_buffer* resp) {
    char* scope = json_str(req, len, "host_callback_id");
    char* url = json_str(req, len, "url");
    size_t n = strlen(url) + strlen(scope) + 256;
    char* buf = malloc(n);
    sb b = {0};
    sb_add(&b, "{\"ok\":true,\"result\":{\"plugin\":\"demo-native\",\"greeting\":\"hello from a C plugin library\"");

    snprintf(buf, n,
             "{\"level\":\"info\",\"message\":\"native management.handle\",\"fields\":{\"url\":\"%s\"},"
             "\"host_callback_id\":\"%s\"}",
             url, scope);
    char* got = call_host("host.log", buf);
    sb_add(&b, ",\"log\":");
    sb_add(&b, got);
    free(got);

    snprintf(buf, n, "{\"method\":\"GET\",\"url\":\"%s\",\"host_callback_id\":\"%s\"}", url, scope);
    got = call_host("host.http.do", buf);
    sb_add(&b, ",\"http\":");
    sb_add(&b, got);
    free(got);

    sb_add(&b, "}}");
    free(buf);
    free(url);
    free(scope);
    answer(resp, &b);
    return 0;
}

static int plugin_call(const char* method, const uint8_t* req, size_t len, cliproxy_buffer* resp) {
    if (!strcmp(method, "management.handle")) return management_handle((const char*)req, len, resp);
    sb b = {0};
    sb_add(&b, "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"demo-native has no method ");
    sb_add(&b, method);
    sb_add(&b, "\"}}");
    answer(resp, &b);
    return 0;
}

static void plugin_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

static void plugin_shutdown(void) {}

int cliproxy_plugin_init(const cliproxy_host_api* h, cliproxy_plugin_api* plugin) {
    if (!h || h->abi_version != 1) return 1;
    host = h;
    plugin->abi_version = 1;
    plugin->call = plugin_call;
    plugin->free_buffer = plugin_free;
    plugin->shutdown = plugin_shutdown;
    return 0;
}
