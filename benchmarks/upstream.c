/* A fixed-answer upstream for the HTTP benchmarks: OpenAI and Anthropic chat, plain or SSE.
 *
 * Single-threaded epoll, HTTP/1.1 keep-alive, no allocation per request: it answers in
 * microseconds so that the client's CPU is what the benchmark measures. Not a server for
 * anything else (no chunked request bodies, no pipelining beyond what fits the buffer).
 *
 * Two sets of answers:
 *   - small (any path): tiny bodies, one header beyond the framing, a CHUNKS-event stream;
 *   - realistic (a path under /realistic/, e.g. /realistic/v1/chat/completions): what
 *     api.openai.com sends for gpt-4o-mini: a 1.2 KB pretty-printed chat.completion with a full
 *     usage object and OpenAI's and Cloudflare's response headers (request id, processing time,
 *     the six x-ratelimit-* headers, date, cf-ray, ...); and a chunked-encoded stream of 70
 *     chat.completion.chunk events (role, 68 content deltas of a few words, the finish_reason),
 *     then the usage chunk of stream_options.include_usage (choices: []), then [DONE].
 *
 *   cc -O2 -o upstream upstream.c && ./upstream PORT CHUNKS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define MAXCONN 4096

struct conn { int fd; size_t len; char buf[BUF]; };
static struct conn *conns[MAXCONN];
/* openai, openai stream, anthropic, anthropic stream; then realistic openai, openai stream */
#define NRESP 6
static char *resp[NRESP];
static size_t resp_len[NRESP];

/* -- realistic answers ---------------------------------------------------------------- */

#define REAL_ID "chatcmpl-BYq7Xk2mQw9sVt4RzNp3LcJd8eHfA"
#define REAL_MODEL "gpt-4o-mini-2024-07-18"
#define REAL_CREATED "1764236467"
#define REAL_FP "fp_560af6e559"
#define REAL_CHUNKS 70 /* role + 68 content deltas + finish_reason; then the usage chunk */

/* Response headers as api.openai.com sends them through Cloudflare (set-cookie left out). */
static const char *REAL_HEAD =
    "HTTP/1.1 200 OK\r\n"
    "Date: Thu, 27 Nov 2026 09:41:07 GMT\r\n"
    "Content-Type: %s\r\n"
    "%s"
    "Connection: keep-alive\r\n"
    "access-control-expose-headers: X-Request-ID\r\n"
    "openai-organization: user-q4x8bn2kd7w1vyzjt3mrh5ce\r\n"
    "openai-processing-ms: %s\r\n"
    "openai-project: proj_Zk4tN8wQb2Lm6Xr9VcY3pHs1\r\n"
    "openai-version: 2020-10-01\r\n"
    "x-envoy-upstream-service-time: %s\r\n"
    "x-ratelimit-limit-requests: 30000\r\n"
    "x-ratelimit-limit-tokens: 150000000\r\n"
    "x-ratelimit-remaining-requests: 29999\r\n"
    "x-ratelimit-remaining-tokens: 149999712\r\n"
    "x-ratelimit-reset-requests: 2ms\r\n"
    "x-ratelimit-reset-tokens: 0s\r\n"
    "x-request-id: req_8f3c1a9d2b7e4f6a0c5d9e1b3a7f2c84\r\n"
    "strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
    "cf-cache-status: DYNAMIC\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Server: cloudflare\r\n"
    "CF-RAY: 9a4f2c7e1b8d3a60-AMS\r\n"
    "alt-svc: h3=\":443\"; ma=86400\r\n"
    "\r\n";

/* The non-streaming answer: OpenAI pretty-prints it, two spaces an indent. */
static const char *REAL_JSON =
    "{\n"
    "  \"id\": \"" REAL_ID "\",\n"
    "  \"object\": \"chat.completion\",\n"
    "  \"created\": " REAL_CREATED ",\n"
    "  \"model\": \"" REAL_MODEL "\",\n"
    "  \"choices\": [\n"
    "    {\n"
    "      \"index\": 0,\n"
    "      \"message\": {\n"
    "        \"role\": \"assistant\",\n"
    "        \"content\": \"Yes: a 429 means you hit the request or the token limit of your "
    "tier. Read the x-ratelimit-remaining-* and x-ratelimit-reset-* headers on each response; "
    "after a 429, wait for the reset time they give (or Retry-After) before retrying, with "
    "exponential backoff and jitter.\\n\\nTo stay under the limits, cap concurrency per API key "
    "and set max_tokens close to what you need.\",\n"
    "        \"refusal\": null,\n"
    "        \"annotations\": []\n"
    "      },\n"
    "      \"logprobs\": null,\n"
    "      \"finish_reason\": \"stop\"\n"
    "    }\n"
    "  ],\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 118,\n"
    "    \"completion_tokens\": 79,\n"
    "    \"total_tokens\": 197,\n"
    "    \"prompt_tokens_details\": {\n"
    "      \"cached_tokens\": 0,\n"
    "      \"audio_tokens\": 0\n"
    "    },\n"
    "    \"completion_tokens_details\": {\n"
    "      \"reasoning_tokens\": 0,\n"
    "      \"audio_tokens\": 0,\n"
    "      \"accepted_prediction_tokens\": 0,\n"
    "      \"rejected_prediction_tokens\": 0\n"
    "    }\n"
    "  },\n"
    "  \"service_tier\": \"default\",\n"
    "  \"system_fingerprint\": \"" REAL_FP "\"\n"
    "}\n";

/* The streamed answer, cut into REAL_CHUNKS - 2 deltas of a few words each. */
static const char *REAL_TEXT =
    "Yes: a 429 from the API means you hit either the request or the token limit for your "
    "tier, and the response tells you which. Every response carries x-ratelimit-remaining-requests "
    "and x-ratelimit-remaining-tokens, with the matching x-ratelimit-reset-* headers saying when "
    "each bucket refills.\\n\\nA robust client does three things. First, when it gets a 429 it "
    "waits for the reset time in those headers, or for Retry-After when present, instead of "
    "retrying at once. Second, it backs off exponentially with random jitter, so that many "
    "workers do not retry in lockstep and trip the limit again. Third, it caps concurrency per "
    "API key, because parallel requests drain the token bucket much faster than a single "
    "stream.\\n\\nTo stay under the limits in the first place, batch small prompts together, "
    "cache answers you ask for often, and set max_tokens close to what you actually need: the "
    "token limit counts the requested output up front, not just what the model writes.";

static const char *CHUNK_HEAD =
    "data: {\"id\":\"" REAL_ID "\",\"object\":\"chat.completion.chunk\",\"created\":" REAL_CREATED
    ",\"model\":\"" REAL_MODEL "\",\"service_tier\":\"default\",\"system_fingerprint\":\"" REAL_FP
    "\",\"choices\":";

/* OpenAI pads each chunk with a random "obfuscation" field; a fixed pseudo-random one here. */
static void obfuscation(char *out, unsigned i) {
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned x = i * 2654435761u + 12345u, n = 3 + x % 12;
    for (unsigned k = 0; k < n; k++) { x = x * 1103515245u + 12345u; out[k] = al[(x >> 16) % 62]; }
    out[n] = 0;
}

/* Append one SSE event as one HTTP/1.1 chunk, as OpenAI frames its streams. */
static size_t http_chunk(char *b, size_t n, const char *event, size_t len) {
    n += sprintf(b + n, "%zx\r\n", len);
    memcpy(b + n, event, len);
    n += len;
    memcpy(b + n, "\r\n", 2);
    return n + 2;
}

static char *realistic_json(void) {
    size_t n = strlen(REAL_JSON);
    char *out = malloc(n + 4096), length[64];
    sprintf(length, "Content-Length: %zu\r\n", n);
    int h = sprintf(out, REAL_HEAD, "application/json", length, "1437", "1442");
    memcpy(out + h, REAL_JSON, n);
    out[h + n] = 0;
    return out;
}

static char *realistic_stream(void) {
    static char ev[8192];
    char *out = malloc(1 << 18), obf[16];
    size_t n = (size_t)sprintf(out, REAL_HEAD, "text/event-stream; charset=utf-8",
                               "Transfer-Encoding: chunked\r\n", "214", "219");
    int deltas = REAL_CHUNKS - 2, words = 0, e;
    for (const char *p = REAL_TEXT; *p; p++) words += *p == ' ';
    words += 1;
    obfuscation(obf, 0);
    e = sprintf(ev, "%s[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
                    "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,"
                    "\"obfuscation\":\"%s\"}\n\n", CHUNK_HEAD, obf);
    n = http_chunk(out, n, ev, (size_t)e);
    const char *p = REAL_TEXT;
    for (int i = 0; i < deltas; i++) {
        /* words [i*words/deltas, (i+1)*words/deltas), each delta but the first led by its space */
        int take = (i + 1) * words / deltas - i * words / deltas;
        const char *q = p;
        if (i > 0) q++;  /* past the space that ends the previous delta */
        for (int w = 0; w < take; w++) { while (*q && *q != ' ') q++; if (w + 1 < take) q++; }
        obfuscation(obf, (unsigned)i + 1);
        e = sprintf(ev, "%s[{\"index\":0,\"delta\":{\"content\":\"%.*s\"},\"logprobs\":null,"
                        "\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"%s\"}\n\n",
                    CHUNK_HEAD, (int)(q - p), p, obf);
        n = http_chunk(out, n, ev, (size_t)e);
        p = q;
    }
    obfuscation(obf, (unsigned)deltas + 1);
    e = sprintf(ev, "%s[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                    "\"usage\":null,\"obfuscation\":\"%s\"}\n\n", CHUNK_HEAD, obf);
    n = http_chunk(out, n, ev, (size_t)e);
    obfuscation(obf, (unsigned)deltas + 2);
    e = sprintf(ev, "%s[],\"usage\":{\"prompt_tokens\":118,\"completion_tokens\":231,"
                    "\"total_tokens\":349,\"prompt_tokens_details\":{\"cached_tokens\":0,"
                    "\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,"
                    "\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
                    "\"rejected_prediction_tokens\":0}},\"obfuscation\":\"%s\"}\n\n",
                CHUNK_HEAD, obf);
    n = http_chunk(out, n, ev, (size_t)e);
    n = http_chunk(out, n, "data: [DONE]\n\n", 14);
    memcpy(out + n, "0\r\n\r\n", 6);
    return out;
}

static char *with_head(const char *type, const char *body) {
    size_t n = strlen(body);
    char *out = malloc(n + 256);
    int h = sprintf(out, "HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                         "x-request-id: req_bench\r\n\r\n", type, n);
    memcpy(out + h, body, n);
    out[h + n] = 0;
    return out;
}

static void build(int chunks) {
    static char b[1 << 20];
    resp[0] = with_head("application/json",
        "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"Hello! How can I help you today?\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}");
    size_t n = 0;
    n += sprintf(b + n, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
                        "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
                        "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    for (int i = 0; i < chunks; i++)
        n += sprintf(b + n, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
                            "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
                            "\"delta\":{\"content\":\"word%d \"},\"finish_reason\":null}]}\n\n", i);
    n += sprintf(b + n, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
                        "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
                        "\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,"
                        "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n",
                 chunks, chunks + 12);
    resp[1] = with_head("text/event-stream", b);
    resp[2] = with_head("application/json",
        "{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
        "\"claude-3-5-haiku-latest\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Hello! How can I help you today?\"}],\"stop_reason\":\"end_turn\","
        "\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":9}}");
    n = 0;
    n += sprintf(b + n, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                        "{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
                        "\"claude-3-5-haiku-latest\",\"content\":[],\"stop_reason\":null,"
                        "\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n"
                        "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                        "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for (int i = 0; i < chunks; i++)
        n += sprintf(b + n, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                            "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word%d \"}}\n\n", i);
    n += sprintf(b + n, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                        "{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":"
                        "{\"output_tokens\":%d}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                 chunks);
    resp[3] = with_head("text/event-stream", b);
    resp[4] = realistic_json();
    resp[5] = realistic_stream();
    for (int i = 0; i < NRESP; i++) resp_len[i] = strlen(resp[i]);
}

static void send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EAGAIN) { fd_set s; FD_ZERO(&s); FD_SET(fd, &s); select(fd + 1, 0, &s, 0, 0); continue; }
            return;
        }
        p += w; n -= (size_t)w;
    }
}

/* Answer every complete request in the buffer; keep a partial one. */
static int serve(struct conn *c) {
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) return 0;
        size_t head = (size_t)(end - c->buf) + 4, body = 0;
        char *cl = memmem(c->buf, head, "ontent-length:", 14);
        if (!cl) cl = memmem(c->buf, head, "ontent-Length:", 14);
        if (cl) body = strtoul(cl + 14, 0, 10);
        if (c->len < head + body) return 0;
        int anthropic = memmem(c->buf, head, "/messages", 9) != NULL;
        int stream = memmem(c->buf + head, body, "\"stream\":true", 13) != NULL ||
                     memmem(c->buf + head, body, "\"stream\": true", 14) != NULL;
        char *eol = memmem(c->buf, head, "\r\n", 2);  /* the request line */
        int realistic = memmem(c->buf, (size_t)(eol - c->buf), " /realistic/", 12) != NULL;
        int k = realistic ? 4 + stream : anthropic * 2 + stream;
        send_all(c->fd, resp[k], resp_len[k]);
        memmove(c->buf, c->buf + head + body, c->len - head - body);
        c->len -= head + body;
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8999, chunks = argc > 2 ? atoi(argv[2]) : 60;
    signal(SIGPIPE, SIG_IGN);
    build(chunks);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready %d\n", port);
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept(ls, 0, 0);
                if (c < 0 || c >= MAXCONN) { if (c >= 0) close(c); continue; }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fcntl(c, F_SETFL, O_NONBLOCK);
                if (!conns[c]) conns[c] = malloc(sizeof(struct conn));
                conns[c]->fd = c; conns[c]->len = 0;
                struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                continue;
            }
            struct conn *c = conns[fd];
            ssize_t r = read(fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, 0);
                close(fd);
                continue;
            }
            c->len += (size_t)r;
            serve(c);
            if (c->len == BUF) { epoll_ctl(ep, EPOLL_CTL_DEL, fd, 0); close(fd); }
        }
    }
}
