/* A fixed-answer upstream for the HTTP benchmarks: OpenAI and Anthropic chat, plain or SSE.
 *
 * Single-threaded epoll, HTTP/1.1 keep-alive, no allocation per request: it answers in
 * microseconds so that the client's CPU is what the benchmark measures. Not a server for
 * anything else (no chunked request bodies, no pipelining beyond what fits the buffer).
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
static char *resp[4];      /* openai, openai stream, anthropic, anthropic stream */
static size_t resp_len[4];

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
    for (int i = 0; i < 4; i++) resp_len[i] = strlen(resp[i]);
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
        int k = anthropic * 2 + stream;
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
