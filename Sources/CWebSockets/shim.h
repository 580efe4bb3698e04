#ifndef QG_CWEBSOCKETS_SHIM_H
#define QG_CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>
#include <ev.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// LWS_PRE is a macro; Swift cannot import it.
static inline int qg_lws_pre(void) { return LWS_PRE; }

// A loop's timer is a timerfd the loop watches as a raw file, not an lws_sul: lws 4.1.6 waits in
// poll() for the time to its next sul truncated to whole milliseconds, so the last millisecond before
// every sul is spent in poll(…, 0) calls over every descriptor; with hundreds of distinct session
// deadlines a second that spin was most of an idle fleet's poll() calls (lib/plat/unix/unix-service.c).
#include <sys/timerfd.h>
#include <stdint.h>
static inline int qg_timerfd_create(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }
/// Fires once, `us` microseconds from now (at least one: a zero would disarm it).
static inline int qg_timerfd_arm(int fd, long long us) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (us < 1) us = 1;
    its.it_value.tv_sec = (time_t)(us / 1000000);
    its.it_value.tv_nsec = (long)(us % 1000000) * 1000;
    return timerfd_settime(fd, 0, &its, NULL);
}
static inline void qg_timerfd_drain(int fd) { uint64_t n; (void)!read(fd, &n, sizeof n); }


// A listening TCP socket with SO_REUSEPORT, so each loop can own one on the same port and the kernel
// spreads new connections over them (lws 4.1.6 sets SO_REUSEPORT only for count_threads > 1, which
// LWS_MAX_SMP 1 forbids). IPv4 `host` (dotted quad), `port` 0 for an ephemeral one. Returns the fd and
// writes the bound port, or returns -errno.
static inline int qg_listen_reuseport(const char *host, int port, int backlog, int *bound_port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) { int e = errno; close(fd); return -e; }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { close(fd); return -EINVAL; }
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, backlog) < 0) { int e = errno; close(fd); return -e; }
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) { int e = errno; close(fd); return -e; }
    *bound_port = ntohs(a.sin_port);
    return fd;
}

// Whether another socket already listens on host:port. Our listeners share the port with SO_REUSEPORT,
// so a second gateway started on the same port would silently share the traffic instead of failing:
// a plain bind (no SO_REUSEPORT) is refused while any listener holds it. 1: in use, 0: free, <0: -errno.
static inline int qg_port_in_use(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { close(fd); return -EINVAL; }
    int r = bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ? (errno == EADDRINUSE ? 1 : -errno) : 0;
    close(fd);
    return r;
}

// One pending connection from a non-blocking listener, non-blocking itself; -errno when none could be taken
// (-EAGAIN: none is waiting). With TCP_NODELAY, as lws's own accept sets it (lws_plat_set_socket_options)
// and a socket adopted from us does not get: without it a response written as headers then body, or a
// frame written while the previous one is unacknowledged, waits for the peer's delayed ACK (40 ms on Linux).
static inline int qg_accept(int listener) {
    int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// Whether an accept failed for the open-files limit (the process's or the system's).
static inline int qg_is_file_limit(int error) { return error == EMFILE || error == ENFILE; }

// A descriptor held in reserve, given up to take connections past the open-files limit (see LWSLoop.shed).
static inline int qg_open_spare_fd(void) { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

// Adopts a descriptor (the listening socket, the timerfd) into a context as a raw file: the loop reports
// LWS_CALLBACK_RAW_RX_FILE on `protocol` when it is readable. lws closes the fd when the context is destroyed.
static inline struct lws *qg_adopt_raw_file(struct lws_vhost *vh, int fd, const char *protocol) {
    lws_sock_file_fd_type u;
    u.filefd = fd;
    return lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, protocol, NULL);
}

static inline int qg_close_fd(int fd) { return close(fd); }

// libev as a loop's "foreign" event loop (epoll on Linux): lws registers its sockets, timers and its
// cancel pipe on it and installs no signal watcher of its own (libev allows a signal on one loop only).
static inline void *qg_ev_loop_new(void) { return ev_loop_new(EVFLAG_AUTO); }
static inline void qg_ev_run(void *loop) { ev_run((struct ev_loop *)loop, 0); }
static inline void qg_ev_run_once(void *loop) { ev_run((struct ev_loop *)loop, EVRUN_ONCE); }
static inline void qg_ev_break(void *loop) { ev_break((struct ev_loop *)loop, EVBREAK_ALL); }
static inline void qg_ev_loop_destroy(void *loop) { ev_loop_destroy((struct ev_loop *)loop); }

// A timer of our own on a libev loop. lws 4.1.6's libev glue re-arms its one timer with ev_timer_set on
// a watcher that may still be active, so a sul scheduled earlier than the armed deadline waits for that
// deadline (seconds late). The loop's wake-ups therefore use this watcher, stopped before each re-arm.
typedef void (*qg_owner_cb)(void *owner);
typedef struct qg_ev_timer {
    ev_timer watcher;
    void *owner;
    qg_owner_cb fired;
} qg_ev_timer_t;

static void qg_ev_timer_trampoline(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    qg_ev_timer_t *t = (qg_ev_timer_t *)w;
    t->fired(t->owner);
}

static inline void qg_ev_timer_init(qg_ev_timer_t *t, void *owner, qg_owner_cb fired) {
    memset(t, 0, sizeof *t);
    ev_timer_init(&t->watcher, qg_ev_timer_trampoline, 0., 0.);
    t->owner = owner;
    t->fired = fired;
}

static inline void qg_ev_timer_arm(void *loop, qg_ev_timer_t *t, double seconds) {
    ev_timer_stop((struct ev_loop *)loop, &t->watcher);
    ev_timer_set(&t->watcher, seconds, 0.);
    ev_timer_start((struct ev_loop *)loop, &t->watcher);
}

static inline void qg_ev_timer_stop(void *loop, qg_ev_timer_t *t) { ev_timer_stop((struct ev_loop *)loop, &t->watcher); }

static inline int qg_ev_backend_is_epoll(void *loop) { return ev_backend((struct ev_loop *)loop) == EVBACKEND_EPOLL; }
#endif
