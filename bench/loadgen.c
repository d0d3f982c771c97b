/* loadgen: the benchmark's JSON-RPC load client (newline-delimited JSON-RPC 2.0).
 *
 * Compiled with `cc -O2` at bench time into bench/.build/ so the client is never the
 * bottleneck. It speaks to one server over a Unix socket (--unix PATH) or over the stdio
 * pipes of a child it spawns (--exec CMD ARGS...), and prints one JSON object with its
 * measurements on stdout.
 *
 * Modes:
 *   serial    one request at a time; per-call latency (p50, p90, p99, p99.9, max) and calls/s
 *   pipeline  --depth requests kept in flight; calls/s
 *   stream    open a stream with --body, then keep --depth reads of it in flight
 *             (--read-method) until an answer says "done":true; payload bytes, pieces and,
 *             with --decode, SSE events (blank-line separated) in the decoded payload.
 *
 * Requests are {"jsonrpc":"2.0","id":N,<BODY>} with BODY given by --body. Answers are
 * matched by count (the servers answer every request), and each is checked for a
 * "result" member; anything else counts as an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static int rfd = -1, wfd = -1;
static pid_t child = -1;

static char *buf;
static size_t cap = 1 << 20, len = 0, pos = 0;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void write_all(const char *p, size_t n) {
    while (n) {
        ssize_t w = write(wfd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Returns the next complete line (without '\n', NUL-terminated in place) or NULL at EOF. */
static char *next_line(size_t *out_len) {
    for (;;) {
        char *nl = memchr(buf + pos, '\n', len - pos);
        if (nl) {
            char *line = buf + pos;
            *out_len = (size_t)(nl - line);
            *nl = 0;
            pos = (size_t)(nl - buf) + 1;
            return line;
        }
        if (pos > 0) {
            memmove(buf, buf + pos, len - pos);
            len -= pos;
            pos = 0;
        }
        if (len + 65536 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) die("realloc");
        }
        ssize_t r = read(rfd, buf + len, cap - len - 1);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) return NULL;
        len += (size_t)r;
    }
}

/* True when there is a complete line buffered (no read needed). */
static int line_ready(void) { return memchr(buf + pos, '\n', len - pos) != NULL; }

static int is_result(const char *line) { return strstr(line, "\"result\":") != NULL; }

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, long n, double p) {
    if (n <= 0) return 0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    if (i >= n) i = n - 1;
    return (double)v[i] / 1000.0; /* microseconds */
}

static size_t fmt_req(char *out, size_t outcap, long id, const char *body) {
    int n = snprintf(out, outcap, "{\"jsonrpc\":\"2.0\",\"id\":%ld,%s}\n", id, body);
    if (n < 0 || (size_t)n >= outcap) {
        fprintf(stderr, "loadgen: request too long\n");
        exit(2);
    }
    return (size_t)n;
}

static void connect_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "loadgen: socket path too long\n");
        exit(2);
    }
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    rfd = wfd = fd;
}

static void spawn(char **argv, int quiet_stderr) {
    int in[2], out[2];
    if (pipe(in) < 0 || pipe(out) < 0) die("pipe");
    child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (quiet_stderr) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) dup2(null, 2);
        }
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    wfd = in[1];
    rfd = out[0];
}

/* Standard base64 decoding into out (returns decoded length). */
static const signed char *b64_table(void) {
    static signed char t[256];
    static int init = 0;
    if (!init) {
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        memset(t, -1, sizeof t);
        for (int i = 0; i < 64; i++) t[(unsigned char)a[i]] = (signed char)i;
        init = 1;
    }
    return t;
}

static size_t b64_decode(const char *s, size_t n, unsigned char *out) {
    const signed char *t = b64_table();
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        signed char v = t[(unsigned char)s[i]];
        if (v < 0) continue; /* '=' padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

static size_t b64_len(const char *s, size_t n) {
    size_t pad = 0;
    if (n >= 1 && s[n - 1] == '=') pad++;
    if (n >= 2 && s[n - 2] == '=') pad++;
    return n / 4 * 3 - pad;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen (--unix PATH | --exec CMD...) --mode serial|pipeline|stream\n"
            "  [--count N] [--warmup N] [--depth N] [--body JSON_MEMBERS] [--read-method M]\n"
            "  [--decode] [--quiet-stderr] [--init JSON_MEMBERS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *unix_path = NULL, *mode = "serial", *body = NULL, *read_method = NULL, *init = NULL;
    char **exec_argv = NULL;
    long count = 10000, warmup = 1000, depth = 64;
    int decode = 0, quiet = 0;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--unix") && i + 1 < argc) unix_path = argv[++i];
        else if (!strcmp(a, "--mode") && i + 1 < argc) mode = argv[++i];
        else if (!strcmp(a, "--count") && i + 1 < argc) count = atol(argv[++i]);
        else if (!strcmp(a, "--warmup") && i + 1 < argc) warmup = atol(argv[++i]);
        else if (!strcmp(a, "--depth") && i + 1 < argc) depth = atol(argv[++i]);
        else if (!strcmp(a, "--body") && i + 1 < argc) body = argv[++i];
        else if (!strcmp(a, "--init") && i + 1 < argc) init = argv[++i];
        else if (!strcmp(a, "--read-method") && i + 1 < argc) read_method = argv[++i];
        else if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--quiet-stderr")) quiet = 1;
        else if (!strcmp(a, "--exec") && i + 1 < argc) {
            exec_argv = &argv[i + 1];
            break;
        } else usage();
    }
    if ((!unix_path) == (!exec_argv) || !body || count <= 0 || depth <= 0) usage();
    buf = malloc(cap);
    if (!buf) die("malloc");
    if (unix_path) connect_unix(unix_path);
    else spawn(exec_argv, quiet);

    static char req[65536];
    long id = 1;
    size_t n, ln;
    char *line;

    if (init) { /* one request before anything else (a hello, say) */
        n = fmt_req(req, sizeof req, id++, init);
        write_all(req, n);
        if (!next_line(&ln)) goto eof;
    }

    if (!strcmp(mode, "serial") || !strcmp(mode, "pipeline")) {
        /* warm-up: serial, not timed */
        for (long i = 0; i < warmup; i++) {
            n = fmt_req(req, sizeof req, id++, body);
            write_all(req, n);
            if (!next_line(&ln)) goto eof;
        }
    }

    if (!strcmp(mode, "serial")) {
        uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)count);
        long errors = 0;
        uint64_t t0 = now_ns();
        for (long i = 0; i < count; i++) {
            n = fmt_req(req, sizeof req, id++, body);
            uint64_t s = now_ns();
            write_all(req, n);
            if (!(line = next_line(&ln))) goto eof;
            lat[i] = now_ns() - s;
            if (!is_result(line)) errors++;
        }
        double elapsed = (double)(now_ns() - t0) / 1e9;
        double sum = 0;
        for (long i = 0; i < count; i++) sum += (double)lat[i];
        qsort(lat, (size_t)count, sizeof(uint64_t), cmp_u64);
        printf("{\"mode\":\"serial\",\"count\":%ld,\"errors\":%ld,\"elapsed_s\":%.6f,\"calls_per_s\":%.1f,"
               "\"mean_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f}\n",
               count, errors, elapsed, (double)count / elapsed, sum / (double)count / 1000.0, pct(lat, count, 0.50),
               pct(lat, count, 0.90), pct(lat, count, 0.99), pct(lat, count, 0.999), (double)lat[count - 1] / 1000.0);
    } else if (!strcmp(mode, "pipeline")) {
        /* keep `depth` in flight; refill in one write per batch of answers */
        size_t bcap = (size_t)depth * (strlen(body) + 64) + 64;
        char *batch = malloc(bcap);
        long sent = 0, got = 0, errors = 0;
        uint64_t t0 = now_ns();
        size_t bl = 0;
        while (sent < count && sent - got < depth) {
            bl += fmt_req(batch + bl, bcap - bl, id++, body);
            sent++;
        }
        write_all(batch, bl);
        while (got < count) {
            if (!(line = next_line(&ln))) goto eof;
            got++;
            if (!is_result(line)) errors++;
            if (line_ready() && got < count) continue; /* drain what is buffered first */
            bl = 0;
            while (sent < count && sent - got < depth) {
                bl += fmt_req(batch + bl, bcap - bl, id++, body);
                sent++;
            }
            if (bl) write_all(batch, bl);
        }
        double elapsed = (double)(now_ns() - t0) / 1e9;
        printf("{\"mode\":\"pipeline\",\"count\":%ld,\"depth\":%ld,\"errors\":%ld,\"elapsed_s\":%.6f,"
               "\"calls_per_s\":%.1f}\n",
               count, depth, errors, elapsed, (double)count / elapsed);
    } else if (!strcmp(mode, "stream")) {
        if (!read_method) usage();
        uint64_t t0 = now_ns();
        n = fmt_req(req, sizeof req, id++, body);
        write_all(req, n);
        if (!(line = next_line(&ln))) goto eof;
        char *sid = strstr(line, "\"stream_id\":\"");
        if (!sid) {
            fprintf(stderr, "loadgen: no stream_id in answer: %.300s\n", line);
            return 1;
        }
        sid += 13;
        char *end = strchr(sid, '"');
        char stream_id[256];
        size_t sl = (size_t)(end - sid);
        if (!end || sl >= sizeof stream_id) return 1;
        memcpy(stream_id, sid, sl);
        stream_id[sl] = 0;
        uint64_t t_open = now_ns();
        char rbody[512];
        snprintf(rbody, sizeof rbody, "\"method\":\"%s\",\"params\":{\"stream_id\":\"%s\"}", read_method, stream_id);
        unsigned char *dec = decode ? malloc(1 << 20) : NULL;
        long outstanding = 0, pieces = 0, errors = 0, events = 0, reads = 0;
        uint64_t bytes = 0;
        int done = 0;
        char prev = 0; /* last decoded byte, for events split across pieces */
        char prev2 = 0;
        while (!done || outstanding > 0) {
            size_t bl = 0;
            static char batch[65536];
            while (!done && outstanding < depth) {
                bl += fmt_req(batch + bl, sizeof batch - bl, id++, rbody);
                outstanding++;
                reads++;
            }
            if (bl) write_all(batch, bl);
            if (!(line = next_line(&ln))) goto eof;
            outstanding--;
            if (done) continue; /* answers to reads sent after the end: not counted */
            if (!is_result(line)) {
                errors++;
                done = 1;
                continue;
            }
            char *p = strstr(line, "\"payload\":\"");
            if (p) {
                p += 11;
                char *q = strchr(p, '"');
                if (!q) return 1;
                pieces++;
                if (decode) {
                    size_t dl = b64_decode(p, (size_t)(q - p), dec);
                    bytes += dl;
                    for (size_t k = 0; k < dl; k++) {
                        char c = (char)dec[k];
                        /* an event ends at a blank line: "\n\n" (or "\r\n\r\n", which contains "\n\r\n") */
                        if (c == '\n' && (prev == '\n' || (prev == '\r' && prev2 == '\n'))) events++;
                        prev2 = prev;
                        prev = c;
                    }
                } else {
                    bytes += b64_len(p, (size_t)(q - p));
                }
            }
            if (strstr(line, "\"done\":true")) done = 1;
        }
        double elapsed = (double)(now_ns() - t0) / 1e9;
        double body_s = (double)(now_ns() - t_open) / 1e9;
        printf("{\"mode\":\"stream\",\"bytes\":%llu,\"pieces\":%ld,\"reads\":%ld,\"events\":%ld,\"errors\":%ld,"
               "\"depth\":%ld,\"elapsed_s\":%.6f,\"body_s\":%.6f,\"mb_per_s\":%.2f,\"events_per_s\":%.1f}\n",
               (unsigned long long)bytes, pieces, reads, events, errors, depth, elapsed, body_s,
               (double)bytes / 1e6 / elapsed, (double)events / elapsed);
    } else {
        usage();
    }
    fflush(stdout);
    if (child > 0) {
        close(wfd);
        int status;
        waitpid(child, &status, 0);
    }
    return 0;
eof:
    fprintf(stderr, "loadgen: server closed the connection early\n");
    if (child > 0) kill(child, SIGTERM);
    return 1;
}
