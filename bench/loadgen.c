/*
 * loadgen: an epoll WebSocket fan-out load generator for pycable's benchmarks.
 *
 * Opens N client WebSocket connections, completes the HTTP upgrade, waits for a welcome
 * (optional), sends one masked subscribe frame, waits for the confirmation, and then times
 * broadcasts that it triggers itself through the server's HTTP broadcast endpoint. Every
 * broadcast carries a sequence number in its data ({"seq":17,"pad":"xxx..."}); the receive
 * time (CLOCK_MONOTONIC, one reading per recv() call) of that message at every client is
 * folded into per-seq first/last/count records. The kernel's arrival time of the data
 * (SO_TIMESTAMPNS, converted to CLOCK_MONOTONIC) of the last copy is kept too: the gap between
 * the two shows how far the loadgen itself lags behind what the server already delivered.
 *
 * Built by bench/fanout.py with `cc -O2 -o bench/loadgen bench/loadgen.c`.
 *
 * Server-Sent Events: --sse sends `GET <path>` (e.g. /events?stream=bench) with
 * `Accept: text/event-stream`; a 200 head means subscribed, and each event (up to a blank line)
 * is one message.
 *
 * Other protocols: --proto "" offers no subprotocol; --welcome TEXT is the marker of the
 * server's first message (with --no-welcome the subscribe frame goes right after the upgrade);
 * --subscribe/--confirm are the subscribe frame and the marker of its confirmation; --eio
 * answers Engine.IO v4 pings ("2" -> "3"), so that the peer benchmark's Socket.IO clients
 * (path /socket.io/?EIO=4&transport=websocket, welcome "pingInterval", subscribe "40",
 * confirm "40{") stay connected.
 *
 * Control protocol: one command per line on stdin, answers on stdout.
 *   CONNECT n            open/subscribe clients until n are ready -> "READY n ms errors"
 *   FAN k timeout_ms     k broadcasts one at a time, each after the previous one reached
 *                        every client and its HTTP reply came back. One line per broadcast:
 *                        "SEQ seq trigger_ns first_ns last_ns count http_status klast_ns", then
 *                        "FANDONE k incomplete utime_ns stime_ns wall_ns"
 *   TPUT k window timeout_ms
 *                        k broadcasts with at most `window` not yet fully delivered ->
 *                        "TPUT k delivered expected t_first_trigger_ns t_last_recv_ns
 *                         utime_ns stime_ns wall_ns incomplete reorders http_errors
 *                         k_last_recv_ns"
 *   STAT                 -> "STAT ready msgs seqmsgs other_text pings closes dup reorders"
 *   QUIT                 exit
 * Everything else the clients receive (welcome, pings, confirmations of other clients...)
 * is parsed and ignored. Errors and progress go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_WELCOME, ST_SUBSCRIBING, ST_READY, ST_CLOSED };
enum { K_WS = 1, K_HTTP = 2, K_STDIN = 3 };

typedef struct {
    int fd;
    int state;
    int retries;
    char *buf;           /* inbound bytes not yet parsed */
    size_t len, cap;
    char *out;           /* outbound bytes not yet written (handshake, subscribe, pong) */
    size_t olen, ooff, ocap;
    int64_t last_seq;    /* last seq seen, to count reorders/duplicates */
} conn_t;

typedef struct {
    int fd;
    int busy;            /* a request is in flight */
    int64_t seq;         /* seq of the request in flight */
    char buf[8192];
    size_t len;
} hconn_t;

/* ---- options ---- */
static const char *o_host = "127.0.0.1";
static int o_port = 8080;
static const char *o_path = "/cable";
static const char *o_proto = "actioncable-v1-json";
static int o_bport = 8090;
static const char *o_bpath = "/_broadcast";
static const char *o_stream = "bench";
static const char *o_subscribe =
    "{\"command\":\"subscribe\",\"identifier\":\"{\\\"channel\\\":\\\"$pubsub\\\",\\\"stream_name\\\":\\\"bench\\\"}\"}";
static const char *o_confirm = "confirm_subscription";
static const char *o_welcome = "welcome";
static int o_wait_welcome = 1;
static int o_eio = 0;    /* Engine.IO v4: answer the server's ping packet "2" with "3" */
static int o_sse = 0;    /* Server-Sent Events instead of WebSocket */
static int o_pad = 150;
static int o_conc = 100;
static int o_hconns = 1;
static int o_max_seq = 1 << 20;

/* ---- state ---- */
static int ep;
static conn_t *conns;
static int nconns;       /* slots used */
static int nready;
static int npending;     /* connections in CONNECTING..SUBSCRIBING */
static int target;
static int conn_errors;
static struct sockaddr_in ws_addr, http_addr;
static hconn_t *hc;

static int64_t *t_trig, *t_first, *t_last;
static int64_t *k_last;      /* kernel arrival time (SO_TIMESTAMPNS) of the last copy */
static int64_t cur_kts;      /* kernel arrival time of the data of the current recv, monotonic */
static int64_t real_minus_mono;
static int32_t *cnt;
static int16_t *http_status;
static int64_t next_seq = 1;
static uint64_t st_msgs, st_seqmsgs, st_other, st_pings, st_closes, st_dup, st_reorders;
static int64_t completed;    /* seqs whose count reached nready */
static uint64_t http_errors;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t rnd32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void die(const char *m) {
    perror(m);
    exit(2);
}

static void ep_ctl(int op, int fd, uint32_t events, int kind, int idx) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = ((uint64_t)kind << 32) | (uint32_t)idx;
    if (epoll_ctl(ep, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl");
}

static void reserve(char **p, size_t *cap, size_t need) {
    if (*cap >= need) return;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    *p = realloc(*p, c);
    if (!*p) die("realloc");
    *cap = c;
}

/* ---------------------------------------------------------------- WebSocket clients */

static void ws_queue(conn_t *c, const char *data, size_t n) {
    if (c->ooff == c->olen) c->ooff = c->olen = 0;
    reserve(&c->out, &c->ocap, c->olen + n);
    memcpy(c->out + c->olen, data, n);
    c->olen += n;
}

/* Appends a masked client frame to the connection's output. */
static void ws_queue_frame(conn_t *c, int opcode, const char *payload, size_t n) {
    char hdr[14];
    size_t h = 0;
    hdr[h++] = (char)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (char)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = (char)(0x80 | 126);
        hdr[h++] = (char)(n >> 8);
        hdr[h++] = (char)n;
    } else {
        hdr[h++] = (char)(0x80 | 127);
        for (int i = 7; i >= 0; i--) hdr[h++] = (char)((uint64_t)n >> (8 * i));
    }
    uint32_t m = rnd32();
    unsigned char mk[4] = {(unsigned char)m, (unsigned char)(m >> 8), (unsigned char)(m >> 16),
                           (unsigned char)(m >> 24)};
    memcpy(hdr + h, mk, 4);
    h += 4;
    ws_queue(c, hdr, h);
    reserve(&c->out, &c->ocap, c->olen + n);
    for (size_t i = 0; i < n; i++) c->out[c->olen + i] = (char)(payload[i] ^ mk[i & 3]);
    c->olen += n;
}

static void ws_close_conn(int i, const char *why) {
    conn_t *c = &conns[i];
    if (c->state == ST_CLOSED || c->state == ST_FREE) return;
    int was = c->state;
    if (was == ST_READY) {
        nready--;
        fprintf(stderr, "loadgen: ready client %d closed: %s\n", i, why);
    } else {
        npending--;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = ST_CLOSED;
    c->len = 0;
    c->olen = c->ooff = 0;
    if (was != ST_READY) conn_errors++;
}

static void ws_flush(int i) {
    conn_t *c = &conns[i];
    while (c->ooff < c->olen) {
        ssize_t w = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLOUT, K_WS, i);
                return;
            }
            ws_close_conn(i, strerror(errno));
            return;
        }
        c->ooff += (size_t)w;
    }
    c->ooff = c->olen = 0;
}

static int ws_start(int i) {
    conn_t *c = &conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    c->fd = fd;
    c->len = 0;
    c->olen = c->ooff = 0;
    c->last_seq = 0;
    int r = connect(fd, (struct sockaddr *)&ws_addr, sizeof ws_addr);
    if (r < 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        return -1;
    }
    c->state = ST_CONNECTING;
    npending++;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT, K_WS, i);
    return 0;
}

static void ws_send_handshake(int i) {
    conn_t *c = &conns[i];
    char req[1024];
    if (o_sse) {
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n",
                         o_path, o_host, o_port);
        ws_queue(c, req, (size_t)n);
        c->state = ST_HANDSHAKE;
        ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, K_WS, i);
        ws_flush(i);
        return;
    }
    unsigned char key[16];
    for (int k = 0; k < 16; k++) key[k] = (unsigned char)rnd32();
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char k64[25];
    int o = 0;
    for (int k = 0; k < 15; k += 3) {
        uint32_t v = (key[k] << 16) | (key[k + 1] << 8) | key[k + 2];
        k64[o++] = b64[(v >> 18) & 63];
        k64[o++] = b64[(v >> 12) & 63];
        k64[o++] = b64[(v >> 6) & 63];
        k64[o++] = b64[v & 63];
    }
    uint32_t v = key[15] << 16;
    k64[o++] = b64[(v >> 18) & 63];
    k64[o++] = b64[(v >> 12) & 63];
    k64[o++] = '=';
    k64[o++] = '=';
    k64[o] = 0;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "%s%s%sOrigin: http://%s:%d\r\n\r\n",
                     o_path, o_host, o_port, k64, o_proto[0] ? "Sec-WebSocket-Protocol: " : "", o_proto,
                     o_proto[0] ? "\r\n" : "", o_host, o_port);
    ws_queue(c, req, (size_t)n);
    c->state = ST_HANDSHAKE;
    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, K_WS, i);
    ws_flush(i);
}

static void ws_send_subscribe(int i) {
    conn_t *c = &conns[i];
    ws_queue_frame(c, 0x1, o_subscribe, strlen(o_subscribe));
    c->state = ST_SUBSCRIBING;
    ws_flush(i);
}

/* Parses the seq number out of a text message: `"seq":17` or, if the data string was not
 * decoded by the server, `\"seq\":17`. Returns -1 if there is none. */
static int64_t find_seq(const char *p, size_t n) {
    const char *end = p + n;
    const char *s = p;
    while (s < end) {
        const char *q = memmem(s, (size_t)(end - s), "seq", 3);
        if (!q) return -1;
        q += 3;
        int k = 0;
        while (q < end && k < 4 && (*q == '"' || *q == '\\' || *q == ':' || *q == ' ')) {
            q++;
            k++;
        }
        if (k >= 2 && q < end && *q >= '0' && *q <= '9') {
            int64_t v = 0;
            while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0');
            return v;
        }
        s = q;
    }
    return -1;
}

static void on_text(int i, const char *p, size_t n, int64_t ts) {
    conn_t *c = &conns[i];
    st_msgs++;
    if (o_eio && n == 1 && p[0] == '2') { /* Engine.IO ping -> pong */
        st_pings++;
        ws_queue_frame(c, 0x1, "3", 1);
        ws_flush(i);
        return;
    }
    if (c->state == ST_READY) {
        int64_t seq = find_seq(p, n);
        if (seq > 0 && seq < o_max_seq) {
            st_seqmsgs++;
            if (seq < c->last_seq) st_reorders++; /* (a repeat of last_seq is counted below) */
            c->last_seq = seq;
            if (cnt[seq] == 0) t_first[seq] = ts;
            t_last[seq] = ts;
            if (cur_kts > k_last[seq]) k_last[seq] = cur_kts;
            if (++cnt[seq] == nready) completed++;
            else if (cnt[seq] > nready) st_dup++; /* more copies than clients: a duplicate */
            return;
        }
        if (memmem(p, n, "\"ping\"", 6)) st_pings++;
        else st_other++;
        return;
    }
    if (c->state == ST_WELCOME) {
        if (memmem(p, n, o_welcome, strlen(o_welcome))) ws_send_subscribe(i);
        return;
    }
    if (c->state == ST_SUBSCRIBING) {
        if (memmem(p, n, o_confirm, strlen(o_confirm))) {
            c->state = ST_READY;
            npending--;
            nready++;
        } else if (memmem(p, n, "reject_subscription", 19)) {
            fprintf(stderr, "loadgen: subscription rejected: %.*s\n", (int)n, p);
            ws_close_conn(i, "rejected");
        }
    }
}

static void ws_parse_frames(int i, int64_t ts) {
    conn_t *c = &conns[i];
    size_t off = 0;
    while (c->state != ST_CLOSED && c->len - off >= 2) {
        unsigned char *b = (unsigned char *)c->buf + off;
        size_t avail = c->len - off;
        int opcode = b[0] & 0x0f;
        int masked = b[1] & 0x80;
        uint64_t plen = b[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (avail < 4) break;
            plen = ((uint64_t)b[2] << 8) | b[3];
            h = 4;
        } else if (plen == 127) {
            if (avail < 10) break;
            plen = 0;
            for (int k = 0; k < 8; k++) plen = (plen << 8) | b[2 + k];
            h = 10;
        }
        if (masked) h += 4;
        if (avail < h + plen) {
            reserve(&c->buf, &c->cap, h + plen); /* a frame larger than the buffer: grow */
            break;
        }
        char *payload = (char *)b + h;
        if (masked) {
            unsigned char *mk = b + h - 4;
            for (uint64_t k = 0; k < plen; k++) payload[k] ^= mk[k & 3];
        }
        switch (opcode) {
        case 0x1: /* text */
        case 0x0: /* continuation: seq sits near the start, treat the same */
            on_text(i, payload, plen, ts);
            break;
        case 0x2:
            st_other++;
            break;
        case 0x8: /* close */
            st_closes++;
            fprintf(stderr, "loadgen: client %d got close frame (code %d)\n", i,
                    plen >= 2 ? (((unsigned char)payload[0] << 8) | (unsigned char)payload[1]) : 0);
            ws_close_conn(i, "close frame");
            return;
        case 0x9: /* ping -> pong */
            ws_queue_frame(c, 0xA, payload, plen);
            ws_flush(i);
            break;
        default:
            break;
        }
        off += h + plen;
    }
    if (c->state == ST_CLOSED) return;
    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
}

/* Server-Sent Events: each event ends with a blank line. */
static void sse_parse_events(int i, int64_t ts) {
    conn_t *c = &conns[i];
    size_t off = 0;
    while (c->state != ST_CLOSED) {
        char *e = memmem(c->buf + off, c->len - off, "\n\n", 2);
        if (!e) break;
        size_t n = (size_t)(e - (c->buf + off));
        on_text(i, c->buf + off, n, ts);
        off += n + 2;
    }
    if (c->state == ST_CLOSED) return;
    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
}

static void ws_on_event(int i, uint32_t events) {
    conn_t *c = &conns[i];
    if (c->state == ST_CLOSED || c->state == ST_FREE) return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t sl = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err) {
            ws_close_conn(i, strerror(err));
            return;
        }
        if (!(events & EPOLLOUT)) return;
        ws_send_handshake(i);
        return;
    }
    if (events & EPOLLOUT) {
        ws_flush(i);
        if (c->state == ST_CLOSED) return;
        if (c->ooff == c->olen) ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, K_WS, i);
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    for (;;) {
        if (c->cap - c->len < 2048) reserve(&c->buf, &c->cap, c->len + 4096);
        struct iovec iov = {c->buf + c->len, c->cap - c->len};
        union {
            char b[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } cbuf;
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.b;
        mh.msg_controllen = sizeof cbuf.b;
        ssize_t r = recvmsg(c->fd, &mh, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            ws_close_conn(i, strerror(errno));
            return;
        }
        if (r == 0) {
            ws_close_conn(i, "eof");
            return;
        }
        int64_t ts = now_ns();
        cur_kts = ts;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec kt;
                memcpy(&kt, CMSG_DATA(cm), sizeof kt);
                cur_kts = (int64_t)kt.tv_sec * 1000000000LL + kt.tv_nsec - real_minus_mono;
            }
        }
        c->len += (size_t)r;
        if (c->state == ST_HANDSHAKE) {
            char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!e) continue;
            if (c->len < 12 || memcmp(c->buf + 9, o_sse ? "200" : "101", 3) != 0) {
                fprintf(stderr, "loadgen: upgrade refused: %.*s\n", (int)(e - c->buf), c->buf);
                ws_close_conn(i, "upgrade refused");
                return;
            }
            size_t hl = (size_t)(e - c->buf) + 4;
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            if (o_sse) { /* the head comes once the subscription is confirmed */
                c->state = ST_READY;
                npending--;
                nready++;
            } else if (o_wait_welcome) {
                c->state = ST_WELCOME;
            } else {
                ws_send_subscribe(i);
            }
            if (c->state == ST_CLOSED) return;
        }
        if (o_sse) sse_parse_events(i, ts);
        else ws_parse_frames(i, ts);
        if (c->state == ST_CLOSED) return;
        if ((size_t)r < 2048) return; /* short read: the socket is most likely drained */
    }
}

/* ---------------------------------------------------------------- HTTP broadcaster */

static int http_open(int j) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&http_addr, sizeof http_addr) < 0) {
        fprintf(stderr, "loadgen: broadcast connect: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    hc[j].fd = fd;
    hc[j].len = 0;
    hc[j].busy = 0;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN, K_HTTP, j);
    return 0;
}

static void http_drop(int j) {
    if (hc[j].fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, hc[j].fd, NULL);
        close(hc[j].fd);
    }
    hc[j].fd = -1;
    hc[j].len = 0;
    if (hc[j].busy) {
        http_errors++;
        hc[j].busy = 0;
    }
}

static char *pad_str;

/* Sends one broadcast with a new seq on HTTP connection j; returns the seq or -1. */
static int64_t http_send(int j) {
    if (hc[j].fd < 0 && http_open(j) < 0) return -1;
    int64_t seq = next_seq++;
    if (seq >= o_max_seq) {
        fprintf(stderr, "loadgen: --max-seq exceeded\n");
        exit(2);
    }
    char body[4096], req[8192];
    int bl = snprintf(body, sizeof body, "{\"stream\":\"%s\",\"data\":\"{\\\"seq\\\":%lld,\\\"pad\\\":\\\"%s\\\"}\"}",
                      o_stream, (long long)seq, pad_str);
    int rl = snprintf(req, sizeof req,
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      o_bpath, o_host, o_bport, bl, body);
    t_trig[seq] = now_ns();
    ssize_t off = 0;
    while (off < rl) { /* small request on an idle keep-alive socket: loops at most briefly */
        ssize_t w = send(hc[j].fd, req + off, (size_t)(rl - off), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) continue;
            fprintf(stderr, "loadgen: broadcast send: %s\n", strerror(errno));
            http_drop(j);
            http_errors++;
            return -1;
        }
        off += w;
    }
    hc[j].busy = 1;
    hc[j].seq = seq;
    return seq;
}

static void http_on_event(int j) {
    hconn_t *h = &hc[j];
    for (;;) {
        if (h->len >= sizeof h->buf - 1) {
            fprintf(stderr, "loadgen: broadcast response too large\n");
            http_drop(j);
            return;
        }
        ssize_t r = recv(h->fd, h->buf + h->len, sizeof h->buf - 1 - h->len, 0);
        if (r < 0) {
            if (errno == EAGAIN) break;
            http_drop(j);
            return;
        }
        if (r == 0) {
            http_drop(j);
            return;
        }
        h->len += (size_t)r;
    }
    h->buf[h->len] = 0;
    char *e = strstr(h->buf, "\r\n\r\n");
    if (!e) return;
    size_t hl = (size_t)(e - h->buf) + 4;
    long clen = 0;
    int close_after = 0;
    int chunked = 0;
    for (char *p = h->buf; p < e; p++) {
        if (*p != '\n') continue;
        if (!strncasecmp(p + 1, "content-length:", 15)) clen = strtol(p + 16, NULL, 10);
        if (!strncasecmp(p + 1, "connection:", 11) && strcasestr(p + 12, "close") &&
            strcasestr(p + 12, "close") < strstr(p + 1, "\r\n"))
            close_after = 1;
        if (!strncasecmp(p + 1, "transfer-encoding:", 18) && strcasestr(p + 19, "chunked") &&
            strcasestr(p + 19, "chunked") < strstr(p + 1, "\r\n"))
            chunked = 1;
    }
    size_t total;
    if (chunked) {
        char *z = strstr(e + 4, "0\r\n\r\n");
        if (!z) return;
        total = (size_t)(z - h->buf) + 5;
    } else {
        total = hl + (size_t)clen;
        if (h->len < total) return;
    }
    int status = atoi(h->buf + 9);
    if (h->busy) {
        if (h->seq < o_max_seq) http_status[h->seq] = (int16_t)status;
        if (status < 200 || status >= 300) {
            http_errors++;
            fprintf(stderr, "loadgen: broadcast got HTTP %d\n", status);
        }
        h->busy = 0;
    }
    memmove(h->buf, h->buf + total, h->len - total);
    h->len -= total;
    if (close_after) http_drop(j);
}

/* ---------------------------------------------------------------- event loop */

static char line[256];
static size_t line_len;
static int stdin_eof;

static void poll_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    {
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        real_minus_mono = (int64_t)rt.tv_sec * 1000000000LL + rt.tv_nsec - now_ns();
    }
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait");
    }
    for (int k = 0; k < n; k++) {
        int kind = (int)(evs[k].data.u64 >> 32);
        int idx = (int)(uint32_t)evs[k].data.u64;
        if (kind == K_WS) ws_on_event(idx, evs[k].events);
        else if (kind == K_HTTP) http_on_event(idx);
        else if (kind == K_STDIN) {
            /* read lazily in read_command() */
        }
    }
}

/* Opens connections (at most o_conc handshakes in flight) until `target` are ready. */
static void do_connect(int n) {
    int64_t t0 = now_ns();
    int errs0 = conn_errors;
    if (n > nconns) {
        conns = realloc(conns, sizeof(conn_t) * (size_t)n);
        memset(conns + nconns, 0, sizeof(conn_t) * (size_t)(n - nconns));
        for (int i = nconns; i < n; i++) conns[i].fd = -1;
        nconns = n;
    }
    target = n;
    int64_t last_progress = now_ns();
    int last_ready = nready;
    while (nready < target) {
        for (int i = 0; i < nconns && npending < o_conc && nready + npending < target; i++) {
            if (conns[i].state == ST_FREE ||
                (conns[i].state == ST_CLOSED && conns[i].retries < 5)) {
                if (conns[i].state == ST_CLOSED) conns[i].retries++;
                if (ws_start(i) < 0) conns[i].state = ST_CLOSED, conn_errors++;
            }
        }
        poll_once(50);
        if (nready != last_ready) {
            last_ready = nready;
            last_progress = now_ns();
        } else if (now_ns() - last_progress > 20000000000LL) {
            fprintf(stderr, "loadgen: no connection progress for 20 s (%d ready, %d pending)\n",
                    nready, npending);
            break;
        }
    }
    printf("READY %d %.1f %d\n", nready, (now_ns() - t0) / 1e6, conn_errors - errs0);
    fflush(stdout);
}

static void rusage_ns(int64_t *u, int64_t *s) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *u = (int64_t)ru.ru_utime.tv_sec * 1000000000LL + ru.ru_utime.tv_usec * 1000LL;
    *s = (int64_t)ru.ru_stime.tv_sec * 1000000000LL + ru.ru_stime.tv_usec * 1000LL;
}

static void do_fan(int k, int timeout_ms) {
    int64_t u0, s0, u1, s1, w0 = now_ns();
    rusage_ns(&u0, &s0);
    int incomplete = 0;
    for (int b = 0; b < k; b++) {
        int64_t hd = now_ns() + (int64_t)timeout_ms * 1000000LL;
        while (hc[0].busy && now_ns() < hd) poll_once(10); /* previous HTTP reply */
        if (hc[0].busy) {
            fprintf(stderr, "loadgen: no HTTP reply, reconnecting\n");
            http_drop(0);
        }
        int64_t seq = http_send(0);
        if (seq < 0) {
            incomplete++;
            continue;
        }
        int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000LL;
        while ((cnt[seq] < nready || hc[0].busy) && now_ns() < deadline) poll_once(10);
        if (cnt[seq] < nready) incomplete++;
        printf("SEQ %lld %lld %lld %lld %d %d %lld\n", (long long)seq, (long long)t_trig[seq],
               (long long)t_first[seq], (long long)t_last[seq], cnt[seq], http_status[seq],
               (long long)k_last[seq]);
    }
    rusage_ns(&u1, &s1);
    printf("FANDONE %d %d %lld %lld %lld\n", k, incomplete, (long long)(u1 - u0),
           (long long)(s1 - s0), (long long)(now_ns() - w0));
    fflush(stdout);
}

static void do_tput(int k, int window, int timeout_ms) {
    int64_t u0, s0, u1, s1, w0 = now_ns();
    rusage_ns(&u0, &s0);
    uint64_t reorders0 = st_reorders + st_dup, herr0 = http_errors;
    int64_t first = next_seq, sent = 0;
    int64_t done0 = completed;
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000LL;
    while (now_ns() < deadline) {
        int64_t outstanding = sent - (completed - done0);
        for (int j = 0; j < o_hconns && sent < k && outstanding < window; j++) {
            if (hc[j].busy) continue;
            if (http_send(j) >= 0) {
                sent++;
                outstanding++;
            } else {
                break;
            }
        }
        if (completed - done0 >= k) break;
        poll_once(5);
    }
    /* let the last HTTP replies arrive */
    for (int j = 0; j < o_hconns; j++)
        while (hc[j].busy && now_ns() < deadline + 2000000000LL) poll_once(5);
    rusage_ns(&u1, &s1);
    int64_t wall = now_ns() - w0;
    int64_t t_lastrecv = 0, k_lastrecv = 0, delivered = 0;
    int incomplete = 0;
    for (int64_t s = first; s < first + sent; s++) {
        delivered += cnt[s];
        if (t_last[s] > t_lastrecv) t_lastrecv = t_last[s];
        if (k_last[s] > k_lastrecv) k_lastrecv = k_last[s];
        if (cnt[s] < nready) incomplete++;
    }
    incomplete += (int)(k - sent);
    printf("TPUT %d %lld %lld %lld %lld %lld %lld %lld %d %llu %llu %lld\n", k, (long long)delivered,
           (long long)k * nready, (long long)t_trig[first], (long long)t_lastrecv,
           (long long)(u1 - u0), (long long)(s1 - s0), (long long)wall, incomplete,
           (unsigned long long)(st_reorders + st_dup - reorders0),
           (unsigned long long)(http_errors - herr0), (long long)k_lastrecv);
    fflush(stdout);
}

/* Returns 1 and fills `line` when a full command line is available (non-blocking). */
static int read_command(void) {
    for (;;) {
        char *nl = memchr(line, '\n', line_len);
        if (nl) {
            *nl = 0;
            return 1;
        }
        if (stdin_eof) return 0;
        ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
        if (r < 0) return 0; /* EAGAIN */
        if (r == 0) {
            stdin_eof = 1;
            epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
            if (line_len) {
                line[line_len++] = '\n';
                continue;
            }
            return 0;
        }
        line_len += (size_t)r;
        if (line_len >= sizeof line - 1) line_len = 0; /* garbage */
    }
}

static void consume_command(void) {
    char *nl = memchr(line, 0, line_len);
    size_t used = (size_t)(nl - line) + 1;
    memmove(line, line + used, line_len - used);
    line_len -= used;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [--host H] [--port P] [--path /cable] [--proto actioncable-v1-json]\n"
            "               [--bport Q] [--bpath /_broadcast] [--stream bench] [--pad 150]\n"
            "               [--subscribe JSON] [--confirm TEXT] [--no-welcome] [--conc 100]\n"
            "               [--hconns 1] [--max-seq N] [--welcome TEXT] [--eio] [--sse]\n"
            "               (commands on stdin, see source)\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option opts[] = {
        {"host", 1, 0, 'h'},   {"port", 1, 0, 'p'},    {"path", 1, 0, 'u'},
        {"proto", 1, 0, 'r'},  {"bport", 1, 0, 'b'},   {"bpath", 1, 0, 'B'},
        {"stream", 1, 0, 's'}, {"pad", 1, 0, 'd'},     {"subscribe", 1, 0, 'S'},
        {"confirm", 1, 0, 'C'}, {"no-welcome", 0, 0, 'W'}, {"conc", 1, 0, 'c'},
        {"hconns", 1, 0, 'H'}, {"max-seq", 1, 0, 'm'}, {"welcome", 1, 0, 'w'},
        {"eio", 0, 0, 'E'},    {"sse", 0, 0, 'X'},     {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': o_host = optarg; break;
        case 'p': o_port = atoi(optarg); break;
        case 'u': o_path = optarg; break;
        case 'r': o_proto = optarg; break;
        case 'b': o_bport = atoi(optarg); break;
        case 'B': o_bpath = optarg; break;
        case 's': o_stream = optarg; break;
        case 'd': o_pad = atoi(optarg); break;
        case 'S': o_subscribe = optarg; break;
        case 'C': o_confirm = optarg; break;
        case 'W': o_wait_welcome = 0; break;
        case 'c': o_conc = atoi(optarg); break;
        case 'H': o_hconns = atoi(optarg); break;
        case 'm': o_max_seq = atoi(optarg); break;
        case 'w': o_welcome = optarg; break;
        case 'E': o_eio = 1; break;
        case 'X': o_sse = 1; break;
        default: usage();
        }
    }
    if (o_hconns < 1) o_hconns = 1;
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) perror("setrlimit");
        fprintf(stderr, "loadgen: fd limit %llu\n", (unsigned long long)rl.rlim_cur);
    }

    memset(&ws_addr, 0, sizeof ws_addr);
    ws_addr.sin_family = AF_INET;
    ws_addr.sin_port = htons((uint16_t)o_port);
    if (inet_pton(AF_INET, o_host, &ws_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    http_addr = ws_addr;
    http_addr.sin_port = htons((uint16_t)o_bport);

    pad_str = malloc((size_t)o_pad + 1);
    memset(pad_str, 'x', (size_t)o_pad);
    pad_str[o_pad] = 0;

    t_trig = calloc((size_t)o_max_seq, sizeof *t_trig);
    t_first = calloc((size_t)o_max_seq, sizeof *t_first);
    t_last = calloc((size_t)o_max_seq, sizeof *t_last);
    k_last = calloc((size_t)o_max_seq, sizeof *k_last);
    cnt = calloc((size_t)o_max_seq, sizeof *cnt);
    http_status = calloc((size_t)o_max_seq, sizeof *http_status);
    hc = calloc((size_t)o_hconns, sizeof *hc);
    for (int j = 0; j < o_hconns; j++) hc[j].fd = -1;
    rng ^= (uint64_t)now_ns() * 0x2545F4914F6CDD1Dull;

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    ep_ctl(EPOLL_CTL_ADD, 0, EPOLLIN, K_STDIN, 0);

    printf("HELLO\n");
    fflush(stdout);
    for (;;) {
        if (read_command()) {
            int a = 0, b = 0, c = 0;
            if (sscanf(line, "CONNECT %d", &a) == 1) do_connect(a);
            else if (sscanf(line, "FAN %d %d", &a, &b) == 2) do_fan(a, b);
            else if (sscanf(line, "TPUT %d %d %d", &a, &b, &c) == 3) do_tput(a, b, c);
            else if (!strncmp(line, "STAT", 4)) {
                printf("STAT %d %llu %llu %llu %llu %llu %llu %llu\n", nready,
                       (unsigned long long)st_msgs, (unsigned long long)st_seqmsgs,
                       (unsigned long long)st_other, (unsigned long long)st_pings,
                       (unsigned long long)st_closes, (unsigned long long)st_dup,
                       (unsigned long long)st_reorders);
                fflush(stdout);
            } else if (!strncmp(line, "QUIT", 4)) {
                return 0;
            } else if (line[0]) {
                printf("ERR unknown command: %s\n", line);
                fflush(stdout);
            }
            consume_command();
            continue;
        }
        if (stdin_eof) return 0;
        poll_once(1000); /* idle: keep answering pings and reading whatever arrives */
    }
}
