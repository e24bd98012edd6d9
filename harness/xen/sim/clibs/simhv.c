/* simhv: client side of the simulated hypervisor protocol; see simhv.h. */
#include "simhv.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HIDDEN __attribute__((visibility("hidden")))

static int env_timeout_ms(void)
{
    const char *t = getenv(SIMHV_TIMEOUT_ENV);
    if (t && *t) {
        char *end;
        double s = strtod(t, &end);
        if (end != t && s > 0 && s < 86400)
            return (int)(s * 1000);
    }
    return 10000;
}

HIDDEN uint32_t simhv_self_domid(void)
{
    const char *d = getenv(SIMHV_DOMID_ENV);
    if (d && *d) {
        char *end;
        unsigned long v = strtoul(d, &end, 0);
        if (end != d && v < 0x7ff0)
            return (uint32_t)v;
    }
    return 0;
}

HIDDEN int simhv_open(struct simhv *hv)
{
    const char *path = getenv(SIMHV_ENV);
    char built[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    struct sockaddr_un sa;
    int fd;

    memset(hv, 0, sizeof(*hv));
    hv->fd = -1;
    if (!path || !*path)
        path = getenv(SIMHV_ENV_ALT);
    if (!path || !*path) {
        const char *dir = getenv(SIMHV_DIR_ENV);
        if (dir && *dir) {
            int n = snprintf(built, sizeof(built), "%s/dom%u/hypervisor.sock", dir,
                             (unsigned)simhv_self_domid());
            path = n > 0 && (size_t)n < sizeof(built) ? built : NULL;
            if (!path) {
                errno = ENAMETOOLONG;
                return -1;
            }
        }
    }
    if (!path || !*path) {
        errno = ENOENT;
        return -1;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    if (SIMHV_NOINTR(connect(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (pthread_mutex_init(&hv->lock, NULL) != 0) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    hv->fd = fd;
    hv->timeout_ms = env_timeout_ms();
    return 0;
}

HIDDEN void simhv_close(struct simhv *hv)
{
    if (hv->fd >= 0) {
        close(hv->fd);
        hv->fd = -1;
        pthread_mutex_destroy(&hv->lock);
    }
}

HIDDEN void simhv_close_fds(int *fds, int nfds)
{
    for (int i = 0; fds && i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

HIDDEN void simhv_reply_free(struct simhv_reply *rep)
{
    if (!rep)
        return;
    free(rep->data);
    simhv_close_fds(rep->fds, rep->nfds);
    free(rep->fds);
    memset(rep, 0, sizeof(*rep));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Receive one datagram (waiting at most until `deadline` ms; -1: no wait beyond what is
 * queued). Returns its length, 0 at EOF, -1 with errno (ETIMEDOUT, EAGAIN when nothing
 * was queued and deadline < 0). */
static ssize_t recv_one(int fd, uint8_t *buf, size_t cap, int *fds, int *nfds,
                        int64_t deadline)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * SIMHV_MAX_FDS)];
    } cbuf;
    struct iovec iov = { buf, cap };
    struct msghdr mh;
    ssize_t n;

    *nfds = 0;
    for (;;) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int wait = 0, r;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        r = poll(&pfd, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = deadline >= 0 ? ETIMEDOUT : EAGAIN;
            return -1;
        }
        break;
    }
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.buf;
    mh.msg_controllen = sizeof(cbuf.buf);
    n = SIMHV_NOINTR(recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT));
    if (n < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k && *nfds < SIMHV_MAX_FDS; i++)
                memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        simhv_close_fds(fds, *nfds);
        *nfds = 0;
        errno = EPROTO;
        return -1;
    }
    if (n == 0 && *nfds == 0)
        return 0;
    return n;
}

static int send_msg(int fd, const uint8_t *msg, size_t len, const int *fds, int nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * SIMHV_MAX_FDS)];
    } cbuf;
    struct iovec iov = { (void *)msg, len };
    struct msghdr mh;

    if (nfds < 0 || nfds > SIMHV_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *c;
        memset(cbuf.buf, 0, sizeof(cbuf.buf));
        mh.msg_control = cbuf.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    if (SIMHV_NOINTR(sendmsg(fd, &mh, MSG_NOSIGNAL)) < 0)
        return -1;
    return 0;
}

static int append(struct simhv_reply *rep, const uint8_t *data, size_t len, int *fds,
                  int nfds)
{
    if (len) {
        uint8_t *d = realloc(rep->data, rep->len + len);
        if (!d)
            return -1;
        memcpy(d + rep->len, data, len);
        rep->data = d;
        rep->len += len;
    }
    if (nfds) {
        int *f = realloc(rep->fds, sizeof(int) * (size_t)(rep->nfds + nfds));
        if (!f)
            return -1;
        memcpy(f + rep->nfds, fds, sizeof(int) * (size_t)nfds);
        rep->fds = f;
        rep->nfds += nfds;
    }
    return 0;
}

static void dispatch_async(struct simhv *hv, const uint8_t *buf, size_t n, int *fds, int nfds)
{
    uint32_t op = simhv_get32(buf);
    if (hv->on_async)
        hv->on_async(hv->async_ctx, op, buf + SIMHV_HEADER_SIZE, n - SIMHV_HEADER_SIZE,
                     fds, nfds);
    else
        simhv_close_fds(fds, nfds);
}

HIDDEN int simhv_call(struct simhv *hv, uint32_t op, const void *payload, size_t len,
                      const int *fds, int nfds, int chunked, struct simhv_reply *rep)
{
    uint8_t *buf;
    int rfds[SIMHV_MAX_FDS];
    int rc = -1, err = 0;
    uint32_t seq;
    int64_t deadline;

    memset(rep, 0, sizeof(*rep));
    if (!hv || hv->fd < 0) {
        errno = EBADF;
        return -1;
    }
    if (len > SIMHV_MAX_MSG - SIMHV_HEADER_SIZE) {
        errno = E2BIG;
        return -1;
    }
    buf = malloc(SIMHV_MAX_MSG);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    pthread_mutex_lock(&hv->lock);
    seq = ++hv->seq;
    if (seq == 0)
        seq = ++hv->seq;
    simhv_put32(buf, op);
    simhv_put32(buf + 4, seq);
    simhv_put32(buf + 8, 0);
    simhv_put32(buf + 12, (uint32_t)len);
    if (len)
        memcpy(buf + SIMHV_HEADER_SIZE, payload, len);
    if (send_msg(hv->fd, buf, SIMHV_HEADER_SIZE + len, fds, nfds) < 0) {
        err = errno == ECONNREFUSED || errno == ENOTCONN ? EPIPE : errno;
        goto out;
    }
    deadline = now_ms() + hv->timeout_ms;
    for (;;) {
        int nr = 0;
        ssize_t n = recv_one(hv->fd, buf, SIMHV_MAX_MSG, rfds, &nr, deadline);
        uint32_t rop, rseq, rlen;
        int32_t status;
        if (n < 0) {
            err = errno;
            goto out;
        }
        if (n == 0) {
            err = EPIPE;
            goto out;
        }
        if ((size_t)n < SIMHV_HEADER_SIZE) {
            simhv_close_fds(rfds, nr);
            err = EPROTO;
            goto out;
        }
        rop = simhv_get32(buf);
        rseq = simhv_get32(buf + 4);
        status = (int32_t)simhv_get32(buf + 8);
        rlen = simhv_get32(buf + 12);
        if (rlen != (size_t)n - SIMHV_HEADER_SIZE) {
            simhv_close_fds(rfds, nr);
            err = EPROTO;
            goto out;
        }
        if (rseq == 0) {
            dispatch_async(hv, buf, (size_t)n, rfds, nr);
            continue;
        }
        if (rseq != seq || rop != op) {
            simhv_close_fds(rfds, nr); /* stale reply of a call that timed out */
            continue;
        }
        rep->status = status;
        if (status != 0 || !chunked) {
            if (append(rep, buf + SIMHV_HEADER_SIZE, rlen, rfds, nr) < 0) {
                simhv_close_fds(rfds, nr);
                err = ENOMEM;
                goto out;
            }
            rc = 0;
            goto out;
        }
        if (rlen < SIMHV_CHUNK_SIZE) {
            simhv_close_fds(rfds, nr);
            err = EPROTO;
            goto out;
        }
        {
            const uint8_t *ch = buf + SIMHV_HEADER_SIZE;
            uint32_t total = simhv_get32(ch), first = simhv_get32(ch + 4);
            uint32_t count = simhv_get32(ch + 8);
            rep->nitems = total;
            rep->extra = simhv_get32(ch + 12);
            if (append(rep, ch + SIMHV_CHUNK_SIZE, rlen - SIMHV_CHUNK_SIZE, rfds, nr) < 0) {
                simhv_close_fds(rfds, nr);
                err = ENOMEM;
                goto out;
            }
            if (count == 0 || first + count >= total) {
                rc = 0;
                goto out;
            }
        }
    }
out:
    pthread_mutex_unlock(&hv->lock);
    free(buf);
    if (rc < 0) {
        simhv_reply_free(rep);
        errno = err ? err : EIO;
    }
    return rc;
}

HIDDEN int simhv_call_ok(struct simhv *hv, uint32_t op, const void *payload, size_t len,
                         const int *fds, int nfds, int chunked, struct simhv_reply *rep)
{
    if (simhv_call(hv, op, payload, len, fds, nfds, chunked, rep) < 0)
        return -1;
    if (rep->status < 0) {
        int e = -rep->status;
        simhv_reply_free(rep);
        errno = e;
        return -1;
    }
    return 0;
}

HIDDEN int simhv_poll_async(struct simhv *hv, int ms)
{
    uint8_t *buf;
    int rfds[SIMHV_MAX_FDS];
    int handled = 0, err = 0;
    int64_t deadline = ms > 0 ? now_ms() + ms : -1;

    if (!hv || hv->fd < 0) {
        errno = EBADF;
        return -1;
    }
    buf = malloc(SIMHV_MAX_MSG);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    pthread_mutex_lock(&hv->lock);
    for (;;) {
        int nr = 0;
        ssize_t n = recv_one(hv->fd, buf, SIMHV_MAX_MSG, rfds, &nr, deadline);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != ETIMEDOUT)) {
            err = n == 0 ? EPIPE : errno; /* the daemon is gone */
            break;
        }
        if (n < 0)
            break;
        if ((size_t)n >= SIMHV_HEADER_SIZE && simhv_get32(buf + 4) == 0 &&
            simhv_get32(buf + 12) == (size_t)n - SIMHV_HEADER_SIZE) {
            dispatch_async(hv, buf, (size_t)n, rfds, nr);
            handled++;
        } else {
            simhv_close_fds(rfds, nr);
        }
        deadline = -1; /* after the first, only drain what is queued */
    }
    pthread_mutex_unlock(&hv->lock);
    free(buf);
    if (err) {
        errno = err;
        return -1;
    }
    return handled;
}

HIDDEN volatile uint32_t *simhv_fault_page(struct simhv *hv)
{
    struct simhv_reply rep;
    void *p;

    if (simhv_call_ok(hv, SIMHV_FAULT_PAGE, NULL, 0, NULL, 0, 0, &rep) < 0)
        return NULL;
    if (rep.nfds < 1) {
        simhv_reply_free(&rep);
        return NULL;
    }
    p = mmap(NULL, SIMHV_PAGE_SIZE, PROT_READ, MAP_SHARED, rep.fds[0], 0);
    simhv_reply_free(&rep);
    return p == MAP_FAILED ? NULL : (volatile uint32_t *)p;
}
