/*
 * netprobe: the NetworkPolicy test image's server and client (static, no libc
 * beyond what glibc links statically). One binary, three modes:
 *
 *   netprobe serve ID [PORT...]
 *       Serves TCP and UDP on each PORT (default 80 81) and answers every TCP
 *       connection and every UDP datagram with "ID\n" (TCP: then closes).
 *       ID "@peer" answers with the address the client was seen from
 *       instead (source-address tests: SNAT vs direct server return).
 *       SCTP is not served: the kernels weir is tested on have no SCTP.
 *
 *   netprobe probe [-t TIMEOUT_MS] SPEC...
 *       SPEC is tcp:IP:PORT or udp:IP:PORT. All probes run at once (one poll
 *       loop); prints one line per SPEC, in argument order:
 *       "SPEC ok ID" or "SPEC fail REASON" (timeout, refused, ...).
 *       UDP datagrams are re-sent every 200 ms until the timeout.
 *
 *   netprobe watch [-i INTERVAL_US] [-t TIMEOUT_MS] -d DURATION_MS tcp:IP:PORT
 *       Starts a new TCP connection every INTERVAL_US for DURATION_MS, each
 *       with its own timeout; prints "START_NS ok|fail" (CLOCK_REALTIME of
 *       the attempt's start) for the first attempt and for every attempt
 *       whose result differs from the previous attempt's (in start order).
 *
 *   netprobe load [-c CONCURRENCY] [-p PROCS] -d DURATION_MS IP:PORT
 *       Short TCP connections (connect, read the answer to EOF, close) as fast
 *       as possible; prints "ok N fail M secs S" summed over PROCS processes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 16
#define MAX_PROBES 1024

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static int64_t now_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ms(void) { return now_ns(CLOCK_MONOTONIC) / 1000000; }

static int nonblock(int fd) {
    return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int parse_addr(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    long port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa->sin_addr) != 1) return -1;
    sa->sin_port = htons((uint16_t)port);
    return 0;
}

/* ---- serve ---- */

static int serve(int argc, char **argv) {
    if (argc < 1) {
        fprintf(stderr, "usage: netprobe serve ID [PORT...]\n");
        return 2;
    }
    char answer[256];
    snprintf(answer, sizeof answer, "%s\n", argv[0]);
    size_t alen = strlen(answer);
    int peer = strcmp(argv[0], "@peer") == 0;
    int ports[MAX_PORTS], nports = 0;
    for (int i = 1; i < argc && nports < MAX_PORTS; i++) ports[nports++] = atoi(argv[i]);
    if (nports == 0) {
        ports[nports++] = 80;
        ports[nports++] = 81;
    }
    struct pollfd fds[2 * MAX_PORTS];
    int is_tcp[2 * MAX_PORTS];
    int n = 0;
    for (int i = 0; i < nports; i++) {
        for (int tcp = 1; tcp >= 0; tcp--) {
            int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(ports[i])};
            if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
                (tcp && listen(fd, 1024) < 0)) {
                fprintf(stderr, "netprobe: cannot serve %s/%d: %s\n", tcp ? "tcp" : "udp",
                        ports[i], strerror(errno));
                return 1;
            }
            nonblock(fd);
            fds[n].fd = fd;
            fds[n].events = POLLIN;
            is_tcp[n++] = tcp;
        }
    }
    printf("netprobe: %s serving tcp+udp on", argv[0]);
    for (int i = 0; i < nports; i++) printf(" %d", ports[i]);
    printf("\n");
    fflush(stdout);
    for (;;) {
        if (poll(fds, n, -1) < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            if (is_tcp[i]) {
                int c;
                struct sockaddr_in from;
                socklen_t flen = sizeof from;
                while ((c = accept(fds[i].fd, (struct sockaddr *)&from, &flen)) >= 0) {
                    if (peer) {
                        snprintf(answer, sizeof answer, "%s\n", inet_ntoa(from.sin_addr));
                        alen = strlen(answer);
                    }
                    /* Small answer into an empty send buffer: never blocks. */
                    ssize_t w = write(c, answer, alen);
                    (void)w;
                    close(c);
                    flen = sizeof from;
                }
            } else {
                char buf[512];
                struct sockaddr_in from;
                socklen_t flen = sizeof from;
                while (recvfrom(fds[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen) >= 0) {
                    if (peer) {
                        snprintf(answer, sizeof answer, "%s\n", inet_ntoa(from.sin_addr));
                        alen = strlen(answer);
                    }
                    sendto(fds[i].fd, answer, alen, 0, (struct sockaddr *)&from, flen);
                    flen = sizeof from;
                }
            }
        }
    }
}

/* ---- probe ---- */

struct probe {
    const char *spec;
    int tcp;
    struct sockaddr_in sa;
    int fd;
    int done;
    int connected;
    int64_t last_send;
    char result[200];
    char buf[200];
    size_t got;
};

static void finish(struct probe *p, const char *fmt, const char *arg) {
    snprintf(p->result, sizeof p->result, fmt, arg);
    p->done = 1;
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
}

static void answer_of(struct probe *p) {
    p->buf[p->got < sizeof p->buf ? p->got : sizeof p->buf - 1] = 0;
    char *nl = strchr(p->buf, '\n');
    if (nl) *nl = 0;
    finish(p, p->buf[0] ? "ok %s" : "fail empty-answer%s", p->buf);
}

static int probe_main(int argc, char **argv) {
    int timeout_ms = 2000, first = 0;
    if (argc >= 2 && strcmp(argv[0], "-t") == 0) {
        timeout_ms = atoi(argv[1]);
        first = 2;
    }
    int n = argc - first;
    if (n <= 0 || n > MAX_PROBES) {
        fprintf(stderr, "usage: netprobe probe [-t MS] tcp|udp:IP:PORT... (at most %d)\n", MAX_PROBES);
        return 2;
    }
    static struct probe ps[MAX_PROBES];
    static struct pollfd fds[MAX_PROBES];
    static int idx[MAX_PROBES];
    int64_t start = mono_ms();
    for (int i = 0; i < n; i++) {
        struct probe *p = &ps[i];
        memset(p, 0, sizeof *p);
        p->spec = argv[first + i];
        p->fd = -1;
        if (strncmp(p->spec, "tcp:", 4) == 0) p->tcp = 1;
        else if (strncmp(p->spec, "udp:", 4) != 0) {
            finish(p, "fail bad-spec%s", "");
            continue;
        }
        if (parse_addr(p->spec + 4, &p->sa) < 0) {
            finish(p, "fail bad-spec%s", "");
            continue;
        }
        p->fd = socket(AF_INET, p->tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (p->fd < 0) {
            finish(p, "fail socket:%s", strerror(errno));
            continue;
        }
        nonblock(p->fd);
        if (connect(p->fd, (struct sockaddr *)&p->sa, sizeof p->sa) < 0 && errno != EINPROGRESS) {
            finish(p, "fail connect:%s", strerror(errno));
            continue;
        }
        if (!p->tcp) {
            p->connected = 1;
            p->last_send = mono_ms();
            if (send(p->fd, "?", 1, 0) < 0 && errno != EAGAIN) finish(p, "fail send:%s", strerror(errno));
        }
    }
    for (;;) {
        int m = 0;
        int64_t now = mono_ms();
        for (int i = 0; i < n; i++) {
            struct probe *p = &ps[i];
            if (p->done) continue;
            if (now - start >= timeout_ms) {
                finish(p, p->connected && p->tcp ? "fail read-timeout%s" : "fail timeout%s", "");
                continue;
            }
            if (!p->tcp && now - p->last_send >= 200) {
                p->last_send = now;
                send(p->fd, "?", 1, 0);
            }
            fds[m].fd = p->fd;
            fds[m].events = p->tcp && !p->connected ? POLLOUT : POLLIN;
            idx[m++] = i;
        }
        if (m == 0) break;
        int wait = 50;
        if (poll(fds, m, wait) < 0 && errno != EINTR) return 1;
        for (int j = 0; j < m; j++) {
            struct probe *p = &ps[idx[j]];
            if (!fds[j].revents) continue;
            if (p->tcp && !p->connected) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    finish(p, err == ECONNREFUSED ? "fail refused%s" : "fail connect:%s",
                           err == ECONNREFUSED ? "" : strerror(err));
                    continue;
                }
                p->connected = 1;
                continue;
            }
            ssize_t r = recv(p->fd, p->buf + p->got, sizeof p->buf - 1 - p->got, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                if (!p->tcp && errno == ECONNREFUSED) {
                    finish(p, "fail refused%s", "");
                    continue;
                }
                finish(p, "fail recv:%s", strerror(errno));
                continue;
            }
            p->got += (size_t)r;
            if (r == 0 || !p->tcp || memchr(p->buf, '\n', p->got) || p->got >= sizeof p->buf - 1)
                answer_of(p);
        }
    }
    for (int i = 0; i < n; i++) printf("%s %s\n", ps[i].spec, ps[i].result);
    return 0;
}

/* ---- watch ---- */

struct attempt {
    int fd;
    int64_t start_real;
    int64_t start_mono;
    int state; /* 0 pending, 1 ok, 2 fail */
};

static int watch_main(int argc, char **argv) {
    long interval_us = 2000, timeout_ms = 300, duration_ms = 0;
    const char *spec = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-i") == 0 && i + 1 < argc) interval_us = atol(argv[++i]);
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) timeout_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) duration_ms = atol(argv[++i]);
        else spec = argv[i];
    }
    struct sockaddr_in sa;
    if (!spec || strncmp(spec, "tcp:", 4) != 0 || parse_addr(spec + 4, &sa) < 0 || duration_ms <= 0 ||
        interval_us <= 0) {
        fprintf(stderr, "usage: netprobe watch [-i US] [-t MS] -d MS tcp:IP:PORT\n");
        return 2;
    }
    size_t cap = (size_t)(duration_ms * 1000 / interval_us) + 2;
    struct attempt *at = calloc(cap, sizeof *at);
    struct pollfd *fds = calloc(cap, sizeof *fds);
    int *idx = calloc(cap, sizeof *idx);
    if (!at || !fds || !idx) return 1;
    size_t started = 0, first_open = 0;
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    for (;;) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        int64_t next = t0 + (int64_t)started * interval_us * 1000;
        if (now - t0 < duration_ms * 1000000 && started < cap && now >= next) {
            struct attempt *a = &at[started++];
            a->start_real = now_ns(CLOCK_REALTIME);
            a->start_mono = now;
            a->fd = socket(AF_INET, SOCK_STREAM, 0);
            if (a->fd < 0) {
                a->state = 2;
            } else {
                nonblock(a->fd);
                /* RST on close: no TIME_WAIT pile-up from thousands of attempts. */
                struct linger lg = {1, 0};
                setsockopt(a->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                if (connect(a->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
                    close(a->fd);
                    a->state = 2;
                }
            }
            continue;
        }
        int m = 0;
        for (size_t i = first_open; i < started; i++) {
            struct attempt *a = &at[i];
            if (a->state) continue;
            if ((now - a->start_mono) / 1000000 >= timeout_ms) {
                close(a->fd);
                a->state = 2;
                continue;
            }
            fds[m].fd = a->fd;
            fds[m].events = POLLOUT;
            idx[m++] = (int)i;
        }
        while (first_open < started && at[first_open].state) first_open++;
        if (m == 0 && (now - t0 >= duration_ms * 1000000 || started >= cap)) break;
        int64_t until_next = (next - now) / 1000000;
        int wait = until_next < 0 ? 0 : (int)(until_next > 5 ? 5 : until_next);
        if (m == 0) {
            struct timespec ts = {0, interval_us * 1000 / 2};
            nanosleep(&ts, NULL);
            continue;
        }
        if (poll(fds, m, wait) < 0 && errno != EINTR) return 1;
        for (int j = 0; j < m; j++) {
            if (!fds[j].revents) continue;
            struct attempt *a = &at[idx[j]];
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            a->state = err ? 2 : 1;
            close(a->fd);
        }
    }
    int prev = 0;
    for (size_t i = 0; i < started; i++) {
        if (at[i].state != prev) printf("%lld %s\n", (long long)at[i].start_real, at[i].state == 1 ? "ok" : "fail");
        prev = at[i].state;
    }
    printf("attempts %zu\n", started);
    return 0;
}

/* ---- load ---- */

static void load_one(struct sockaddr_in *sa, int conc, long duration_ms, long *ok, long *fail) {
    struct pollfd *fds = calloc(conc, sizeof *fds);
    int *conn = calloc(conc, sizeof *conn);
    int64_t end = mono_ms() + duration_ms;
    *ok = *fail = 0;
    for (int i = 0; i < conc; i++) fds[i].fd = -1;
    for (;;) {
        int64_t now = mono_ms();
        int open = 0;
        for (int i = 0; i < conc; i++) {
            if (fds[i].fd < 0 && now < end) {
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                nonblock(fd);
                if (connect(fd, (struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS) {
                    close(fd);
                    (*fail)++;
                    continue;
                }
                fds[i].fd = fd;
                fds[i].events = POLLOUT;
                conn[i] = 0;
            }
            if (fds[i].fd >= 0) open++;
        }
        if (open == 0) break;
        if (poll(fds, conc, 100) < 0 && errno != EINTR) break;
        now = mono_ms();
        for (int i = 0; i < conc; i++) {
            if (fds[i].fd < 0) continue;
            if (!fds[i].revents) {
                if (now > end + 1000) { /* stuck past the end: count and drop */
                    close(fds[i].fd);
                    fds[i].fd = -1;
                    (*fail)++;
                }
                continue;
            }
            if (!conn[i]) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    close(fds[i].fd);
                    fds[i].fd = -1;
                    (*fail)++;
                    continue;
                }
                conn[i] = 1;
                fds[i].events = POLLIN;
                continue;
            }
            char buf[256];
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r > 0 || (r < 0 && errno == EAGAIN)) continue;
            close(fds[i].fd);
            fds[i].fd = -1;
            if (r == 0) (*ok)++;
            else (*fail)++;
        }
    }
}

static int load_main(int argc, char **argv) {
    int conc = 32, procs = 2;
    long duration_ms = 0;
    const char *target = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) conc = atoi(argv[++i]);
        else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) procs = atoi(argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) duration_ms = atol(argv[++i]);
        else target = argv[i];
    }
    struct sockaddr_in sa;
    if (!target || parse_addr(target, &sa) < 0 || duration_ms <= 0 || conc <= 0 || procs <= 0 || procs > 64) {
        fprintf(stderr, "usage: netprobe load [-c N] [-p N] -d MS IP:PORT\n");
        return 2;
    }
    int pipes[64][2];
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    for (int p = 0; p < procs; p++) {
        if (pipe(pipes[p]) < 0) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            long ok, fail;
            load_one(&sa, conc, duration_ms, &ok, &fail);
            dprintf(pipes[p][1], "%ld %ld\n", ok, fail);
            _exit(0);
        }
        close(pipes[p][1]);
    }
    long ok = 0, fail = 0;
    for (int p = 0; p < procs; p++) {
        char buf[64] = {0};
        ssize_t r = read(pipes[p][0], buf, sizeof buf - 1);
        long o = 0, f = 0;
        if (r > 0 && sscanf(buf, "%ld %ld", &o, &f) == 2) {
            ok += o;
            fail += f;
        }
        close(pipes[p][0]);
    }
    while (wait(NULL) > 0) {
    }
    double secs = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    printf("ok %ld fail %ld secs %.3f\n", ok, fail, secs);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return serve(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "probe") == 0) return probe_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "watch") == 0) return watch_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "load") == 0) return load_main(argc - 2, argv + 2);
    fprintf(stderr, "usage: netprobe serve|probe|watch|load ...\n");
    return 2;
}
