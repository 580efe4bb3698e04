#ifndef QG_CWEBSOCKETS_SHIM_H
#define QG_CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// LWS_PRE is a macro; Swift cannot import it.
static inline int qg_lws_pre(void) { return LWS_PRE; }

// A timer whose callback can find its owner: lws hands back only the sul
// pointer, and lws_container_of is a macro.
typedef struct qg_timer {
    lws_sorted_usec_list_t sul;
    void *owner;
} qg_timer_t;

static inline void *qg_timer_owner(lws_sorted_usec_list_t *sul) {
    return lws_container_of(sul, qg_timer_t, sul)->owner;
}

// LWS_SET_TIMER_USEC_CANCEL is a macro.
static inline lws_usec_t qg_lws_timer_cancel(void) { return LWS_SET_TIMER_USEC_CANCEL; }

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

// One pending connection from a non-blocking listener, non-blocking itself; -1 when none is waiting.
static inline int qg_accept(int listener) {
    return accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

// Adopts a listening socket into a context as a raw file: the loop reports LWS_CALLBACK_RAW_RX_FILE on
// `protocol` when connections wait. lws closes the fd when the context is destroyed.
static inline struct lws *qg_adopt_listener(struct lws_vhost *vh, int fd, const char *protocol) {
    lws_sock_file_fd_type u;
    u.filefd = fd;
    return lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, protocol, NULL);
}

static inline int qg_close_fd(int fd) { return close(fd); }
#endif
