/*
 * evtchn-echo: the C side of the notify round-trip benchmark (simexec.c_evtchn_pinger).
 *
 *   evtchn-echo REMOTE_DOMID REMOTE_PORT
 *
 * Binds REMOTE_PORT of REMOTE_DOMID with libxenevtchn, prints "bound", then echoes every
 * event back until none comes for 2 seconds or the peer goes away. Built by build.py
 * against the replacement library, declaring the few functions it uses itself so it needs
 * no Xen headers.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct xenevtchn_handle;
struct xentoollog_logger;
struct xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger,
                                        unsigned int open_flags);
int xenevtchn_close(struct xenevtchn_handle *xce);
int xenevtchn_fd(struct xenevtchn_handle *xce);
int xenevtchn_notify(struct xenevtchn_handle *xce, uint32_t port);
int xenevtchn_bind_interdomain(struct xenevtchn_handle *xce, uint32_t domid,
                               uint32_t remote_port);
int xenevtchn_pending(struct xenevtchn_handle *xce);
int xenevtchn_unmask(struct xenevtchn_handle *xce, uint32_t port);

int main(int argc, char **argv)
{
    struct xenevtchn_handle *h;
    struct pollfd p;
    long n = 0;
    int port;

    if (argc != 3) {
        fprintf(stderr, "usage: %s REMOTE_DOMID REMOTE_PORT\n", argv[0]);
        return 2;
    }
    h = xenevtchn_open(NULL, 0);
    if (!h) {
        perror("xenevtchn_open");
        return 1;
    }
    port = xenevtchn_bind_interdomain(h, (uint32_t)atoi(argv[1]), (uint32_t)atoi(argv[2]));
    if (port < 0) {
        perror("xenevtchn_bind_interdomain");
        return 1;
    }
    printf("bound\n");
    fflush(stdout);
    p.fd = xenevtchn_fd(h);
    p.events = POLLIN;
    for (;;) {
        int r = poll(&p, 1, 2000), got;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got = xenevtchn_pending(h);
        if (got < 0)
            break;
        xenevtchn_unmask(h, (uint32_t)got);
        xenevtchn_notify(h, (uint32_t)got);
        n++;
    }
    xenevtchn_close(h);
    fprintf(stderr, "evtchn-echo: %ld events echoed\n", n);
    return 0;
}
