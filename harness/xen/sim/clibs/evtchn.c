/*
 * libxenevtchn.so.1 for the simulated Xen.
 *
 * A handle is one connection to the domain's hypervisor socket (the sim ties ports to the
 * connection, as Linux ties them to an open of /dev/xen/evtchn). Each port is one end of a
 * stream socketpair (given with the port by alloc_unbound or bind_interdomain) whose other
 * end the peer holds: notify writes a byte, an event is pending while bytes are queued.
 * The sim keeps both ends, so a peer going away is not seen here (no EOF), as on Linux.
 * The handle's fd (xenevtchn_fd) is an epoll fd over the port sockets only: readable only
 * while a port is pending, like /dev/xen/evtchn, so xenevtchn_pending after a poll that
 * said readable never blocks.
 *
 * Masking follows Linux's evtchn device: xenevtchn_pending delivers a port (coalescing
 * every notification queued so far) and leaves it masked (out of the epoll set) until
 * xenevtchn_unmask; notifications arriving meanwhile are delivered after the unmask.
 * xenevtchn_pending blocks like read(2) on the device unless the fd was made O_NONBLOCK.
 */
#include "simhv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#if __has_include(<xenevtchn.h>) && !defined(SNDIF_NO_XEN_HEADERS)
#include <xenevtchn.h>
#else
typedef int xenevtchn_port_or_error_t;
typedef uint32_t evtchn_port_t;
typedef struct xenevtchn_handle xenevtchn_handle;
struct xentoollog_logger;
#define XENEVTCHN_NO_CLOEXEC (1 << 0)
#endif

#define EXPORT __attribute__((visibility("default")))
#define HANDLE_MAGIC 0x53455643u /* "SEVC" */
#define HV_TAG UINT64_MAX

#define MAX_PORT 65536u

struct port_ent {
    int used;
    int fd;      /* channel socket, -1 while unbound */
    int masked;  /* delivered and not yet unmasked: out of the epoll set */
};

struct xenevtchn_handle {
    uint32_t magic;
    struct simhv hv;
    int epfd;
    int hv_dead;
    int own_fd; /* fd given to xenevtchn_fdopen, closed with the handle */
    volatile uint32_t *faults; /* the domain's fault page (NULL: none) */
    uint32_t domid;
    int64_t restrict_domid; /* -1: unrestricted */
    pthread_mutex_t lock;
    struct port_ent *ports; /* indexed by port */
    uint32_t nports;
};

static int valid(xenevtchn_handle *h)
{
    if (!h || h->magic != HANDLE_MAGIC) {
        errno = EBADF;
        return 0;
    }
    return 1;
}

static struct port_ent *port_get(xenevtchn_handle *h, uint32_t port)
{
    if (port >= h->nports || !h->ports[port].used)
        return NULL;
    return &h->ports[port];
}

static struct port_ent *port_new(xenevtchn_handle *h, uint32_t port)
{
    if (port >= MAX_PORT)
        return NULL;
    if (port >= h->nports) {
        uint32_t n = h->nports ? h->nports : 64;
        struct port_ent *p;
        while (n <= port)
            n *= 2;
        p = realloc(h->ports, sizeof(*p) * n);
        if (!p)
            return NULL;
        memset(p + h->nports, 0, sizeof(*p) * (n - h->nports));
        for (uint32_t i = h->nports; i < n; i++)
            p[i].fd = -1;
        h->ports = p;
        h->nports = n;
    }
    h->ports[port].used = 1;
    h->ports[port].fd = -1;
    h->ports[port].masked = 0;
    return &h->ports[port];
}

static int watch_fd(xenevtchn_handle *h, int fd, uint64_t tag)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void unwatch_fd(xenevtchn_handle *h, int fd)
{
    struct epoll_event ev;
    epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, &ev);
}

static void drop_port(xenevtchn_handle *h, uint32_t port)
{
    struct port_ent *p = port_get(h, port);
    if (!p)
        return;
    if (p->fd >= 0) {
        if (!p->masked)
            unwatch_fd(h, p->fd);
        close(p->fd);
    }
    p->used = 0;
    p->fd = -1;
    p->masked = 0;
}

/* ASYNC_EVTCHN_BOUND: a peer bound one of our unbound ports; here is our channel end. */
static void on_async(void *ctx, uint32_t op, const uint8_t *payload, size_t len, int *fds,
                     int nfds)
{
    xenevtchn_handle *h = ctx;
    struct port_ent *p;
    int i = 0;

    if (op == SIMHV_ASYNC_EVTCHN_BOUND && len >= 12 && nfds >= 1) {
        p = port_get(h, simhv_get32(payload));
        if (p) {
            if (p->fd >= 0) {
                if (!p->masked)
                    unwatch_fd(h, p->fd);
                close(p->fd);
            }
            p->fd = fds[0];
            i = 1;
            if (!p->masked && watch_fd(h, p->fd, simhv_get32(payload)) < 0) {
                close(p->fd);
                p->fd = -1;
            }
        }
    }
    simhv_close_fds(fds + i, nfds - i);
}

static void drain_async(xenevtchn_handle *h)
{
    if (!h->hv_dead && simhv_poll_async(&h->hv, 0) < 0 && errno != EAGAIN)
        h->hv_dead = 1;
}

static xenevtchn_handle *handle_new(unsigned int open_flags)
{
    xenevtchn_handle *h = calloc(1, sizeof(*h));
    struct simhv_reply rep;
    int e;

    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    h->own_fd = -1;
    h->restrict_domid = -1;
    h->epfd = -1;
    if (simhv_open(&h->hv) < 0)
        goto fail;
    h->hv.on_async = on_async;
    h->hv.async_ctx = h;
    if (simhv_call_ok(&h->hv, SIMHV_WHOAMI, NULL, 0, NULL, 0, 0, &rep) < 0)
        goto fail_hv;
    h->domid = rep.len >= 4 ? simhv_get32(rep.data) : simhv_self_domid();
    simhv_reply_free(&rep);
    h->epfd = epoll_create1(open_flags & XENEVTCHN_NO_CLOEXEC ? 0 : EPOLL_CLOEXEC);
    if (h->epfd < 0)
        goto fail_hv;
    h->faults = simhv_fault_page(&h->hv);
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        errno = ENOMEM;
        goto fail_ep;
    }
    h->magic = HANDLE_MAGIC;
    return h;
fail_ep:
    e = errno;
    if (h->faults)
        munmap((void *)h->faults, SIMHV_PAGE_SIZE);
    close(h->epfd);
    errno = e;
fail_hv:
    e = errno;
    simhv_close(&h->hv);
    errno = e;
fail:
    e = errno;
    free(h);
    errno = e;
    return NULL;
}

EXPORT xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger,
                                        unsigned int open_flags)
{
    (void)logger;
    return handle_new(open_flags);
}

/* There is no /dev/xen/evtchn to adopt on the sim: the handle gets a connection of its
 * own, and `fd` (as the real library's) belongs to the handle, closed with it. */
EXPORT xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger, int fd,
                                          unsigned int open_flags)
{
    xenevtchn_handle *h;
    (void)logger;
    if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
        errno = EBADF;
        return NULL;
    }
    h = handle_new(open_flags);
    if (h)
        h->own_fd = fd;
    return h;
}

EXPORT int xenevtchn_close(xenevtchn_handle *h)
{
    if (!h)
        return 0;
    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    h->magic = 0;
    for (uint32_t i = 0; i < h->nports; i++)
        if (h->ports[i].used && h->ports[i].fd >= 0)
            close(h->ports[i].fd);
    free(h->ports);
    {
        /* release the ports synchronously (closing the connection does it too, but the
         * sim notices that asynchronously: as with close(2) on the device, they are gone
         * when we return) */
        struct simhv_reply rep;
        if (!h->hv_dead &&
            simhv_call(&h->hv, SIMHV_EVTCHN_RESET, NULL, 0, NULL, 0, 0, &rep) == 0)
            simhv_reply_free(&rep);
    }
    simhv_close(&h->hv);
    close(h->epfd);
    if (h->faults)
        munmap((void *)h->faults, SIMHV_PAGE_SIZE);
    if (h->own_fd >= 0)
        close(h->own_fd);
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return 0;
}

EXPORT int xenevtchn_fd(xenevtchn_handle *h)
{
    if (!valid(h))
        return -1;
    return h->epfd;
}

EXPORT int xenevtchn_restrict(xenevtchn_handle *h, uint16_t domid)
{
    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    if (h->restrict_domid >= 0 && h->restrict_domid != domid) {
        pthread_mutex_unlock(&h->lock);
        errno = EINVAL;
        return -1;
    }
    h->restrict_domid = domid;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

EXPORT int xenevtchn_notify(xenevtchn_handle *h, evtchn_port_t port)
{
    struct port_ent *p;
    static const char one = 1;

    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    p = port_get(h, port);
    if (!p) {
        /* Linux's IOCTL_EVTCHN_NOTIFY: not a port of this fd */
        pthread_mutex_unlock(&h->lock);
        errno = ENOTCONN;
        return -1;
    }
    if (h->faults && (*h->faults & SIMHV_FAULT_NOTIFY)) {
        /* a fault is armed for notify in this domain: the hypervisor decides */
        uint8_t pl[4];
        simhv_put32(pl, port);
        struct simhv_reply rep;
        if (simhv_call_ok(&h->hv, SIMHV_EVTCHN_NOTIFY_CHECK, pl, 4, NULL, 0, 0, &rep) < 0) {
            int e = errno;
            pthread_mutex_unlock(&h->lock);
            errno = e;
            return -1;
        }
        simhv_reply_free(&rep);
    }
    if (p->fd >= 0) {
        /* EAGAIN: the peer has plenty pending already; EPIPE/ECONNRESET: the hypervisor
         * closed the port. Neither is an error for the notifier (Xen drops the event). An
         * unbound port's notifications go to the sim, which drops them. */
        SIMHV_NOINTR(send(p->fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL));
    }
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static xenevtchn_port_or_error_t add_bound(xenevtchn_handle *h, uint32_t port, int fd)
{
    struct port_ent *p = port_new(h, port);
    if (!p || (fd >= 0 && watch_fd(h, fd, port) < 0)) {
        int e = p ? errno : ENOMEM;
        uint8_t pl[4];
        struct simhv_reply rep;
        if (p)
            p->used = 0;
        if (fd >= 0)
            close(fd);
        simhv_put32(pl, port);
        if (simhv_call(&h->hv, SIMHV_EVTCHN_UNBIND, pl, 4, NULL, 0, 0, &rep) == 0)
            simhv_reply_free(&rep);
        errno = e;
        return -1;
    }
    p->fd = fd;
    return (xenevtchn_port_or_error_t)port;
}

EXPORT xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *h,
                                                             uint32_t domid)
{
    uint8_t pl[4];
    struct simhv_reply rep;
    xenevtchn_port_or_error_t r;
    int fd;

    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    if (h->restrict_domid >= 0) {
        pthread_mutex_unlock(&h->lock);
        errno = EACCES;
        return -1;
    }
    simhv_put32(pl, domid);
    if (simhv_call_ok(&h->hv, SIMHV_EVTCHN_ALLOC_UNBOUND, pl, 4, NULL, 0, 0, &rep) < 0) {
        pthread_mutex_unlock(&h->lock);
        return -1;
    }
    if (rep.len < 4) {
        simhv_reply_free(&rep);
        pthread_mutex_unlock(&h->lock);
        errno = EPROTO;
        return -1;
    }
    fd = rep.nfds >= 1 ? rep.fds[0] : -1;
    if (fd < 0) {
        simhv_reply_free(&rep);
        pthread_mutex_unlock(&h->lock);
        errno = EPROTO;
        return -1;
    }
    rep.fds[0] = -1;
    r = add_bound(h, simhv_get32(rep.data), fd);
    simhv_reply_free(&rep);
    pthread_mutex_unlock(&h->lock);
    return r;
}

EXPORT xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *h,
                                                            uint32_t domid,
                                                            evtchn_port_t remote_port)
{
    uint8_t pl[8];
    struct simhv_reply rep;
    xenevtchn_port_or_error_t r;
    int fd;

    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    if (h->restrict_domid >= 0 && h->restrict_domid != (int64_t)domid) {
        pthread_mutex_unlock(&h->lock);
        errno = EACCES;
        return -1;
    }
    simhv_put32(pl, domid);
    simhv_put32(pl + 4, remote_port);
    if (simhv_call_ok(&h->hv, SIMHV_EVTCHN_BIND_INTERDOMAIN, pl, 8, NULL, 0, 0, &rep) < 0) {
        pthread_mutex_unlock(&h->lock);
        return -1;
    }
    if (rep.len < 4 || rep.nfds < 1) {
        simhv_reply_free(&rep);
        pthread_mutex_unlock(&h->lock);
        errno = EPROTO;
        return -1;
    }
    fd = rep.fds[0];
    rep.fds[0] = -1;
    r = add_bound(h, simhv_get32(rep.data), fd);
    simhv_reply_free(&rep);
    pthread_mutex_unlock(&h->lock);
    return r;
}

EXPORT int xenevtchn_unbind(xenevtchn_handle *h, evtchn_port_t port)
{
    uint8_t pl[4];
    struct simhv_reply rep;
    int rc;

    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    if (!port_get(h, port)) {
        pthread_mutex_unlock(&h->lock);
        errno = ENOTCONN;
        return -1;
    }
    drop_port(h, port);
    simhv_put32(pl, port);
    rc = simhv_call_ok(&h->hv, SIMHV_EVTCHN_UNBIND, pl, 4, NULL, 0, 0, &rep);
    if (rc == 0)
        simhv_reply_free(&rep);
    pthread_mutex_unlock(&h->lock);
    return rc;
}

EXPORT int xenevtchn_unmask(xenevtchn_handle *h, evtchn_port_t port)
{
    struct port_ent *p;
    int rc = 0;

    if (!valid(h))
        return -1;
    pthread_mutex_lock(&h->lock);
    p = port_get(h, port);
    if (!p) {
        /* Linux's evtchn_write ignores ports that aren't the fd's: unmask succeeds */
        pthread_mutex_unlock(&h->lock);
        return 0;
    }
    if (p->masked) {
        p->masked = 0;
        if (p->fd >= 0 && watch_fd(h, p->fd, port) < 0)
            rc = -1;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

/* One ready port, consumed and masked: 1; 0 when none is ready now; 2 when none is but a
 * channel was closed by the hypervisor (our domain or the sim went away); -1 on error. */
static int take_ready(xenevtchn_handle *h, evtchn_port_t *out)
{
    int closed = 0;
    struct epoll_event evs[16];
    int n = SIMHV_NOINTR(epoll_wait(h->epfd, evs, 16, 0));

    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        struct port_ent *p;
        char buf[256];
        ssize_t r, got = 0;
        int eof = 0;

        if (tag == HV_TAG) {
            drain_async(h);
            if (h->hv_dead)
                unwatch_fd(h, h->hv.fd);
            continue;
        }
        p = port_get(h, (uint32_t)tag);
        if (!p || p->fd < 0 || p->masked)
            continue; /* stale event of a port unbound meanwhile */
        for (;;) {
            r = SIMHV_NOINTR(recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT));
            if (r > 0) {
                got += r;
                continue;
            }
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                eof = 1;
            break;
        }
        if (eof) {
            /* Only the hypervisor closes a channel (it keeps both ends while the port
             * lives): the port is gone, as is our domain or the sim. */
            unwatch_fd(h, p->fd);
            close(p->fd);
            p->fd = -1;
            closed = 1;
        }
        if (got > 0) {
            if (p->fd >= 0)
                unwatch_fd(h, p->fd);
            p->masked = 1;
            *out = (evtchn_port_t)tag;
            return 1;
        }
    }
    return closed ? 2 : 0;
}

EXPORT xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *h)
{
    evtchn_port_t port = 0;
    int nonblock, r;

    if (!valid(h))
        return -1;
    nonblock = fcntl(h->epfd, F_GETFL) & O_NONBLOCK;
    for (;;) {
        struct epoll_event ev;
        pthread_mutex_lock(&h->lock);
        r = take_ready(h, &port);
        pthread_mutex_unlock(&h->lock);
        if (r < 0)
            return -1;
        if (r == 1)
            return (xenevtchn_port_or_error_t)port;
        if (r == 2) {
            /* the fd polled readable for a port the hypervisor closed: never block then */
            errno = EIO;
            return -1;
        }
        if (nonblock) {
            errno = EAGAIN;
            return -1;
        }
        /* wait (without the lock, so other threads may notify/unmask meanwhile) */
        if (SIMHV_NOINTR(epoll_wait(h->epfd, &ev, 1, -1)) < 0)
            return -1;
    }
}
