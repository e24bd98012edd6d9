/*
 * backend_probe: a tiny Xen PV backend written the ordinary way against Debian's
 * libxenstore, libxenevtchn, libxengnttab and libxenctrl, run on the simulated Xen by
 * tests/test_c_backend_probe.py (which plays the frontend domain in Python).
 *
 *   backend_probe BACKEND_DIR ROUNDS
 *
 * 1. xs_watch(BACKEND_DIR); on each event look for a device
 *    BACKEND_DIR/<domid>/<devid>/frontend (it may exist before the watch, or appear later);
 *    wait for the frontend's state to be 3 (Initialised).
 * 2. Read ring-ref, num-buf-pages, buf-ref-<i>, event-channel-req, event-channel-evt.
 * 3. Map the ring (xengnttab_map_grant_refs) and the buffer
 *    (xengnttab_map_domain_grant_refs: one contiguous mapping) and check the frontend's
 *    patterns: ring[0..2048) = (i*7+1)&255, buffer[0..2 pages) = (i*31+7)&255.
 * 4. Two threads, each with its own evtchn handle: "req" binds event-channel-req and echoes
 *    ROUNDS pings of the frontend; "evt" binds event-channel-evt and sends ROUNDS pings,
 *    each waiting for the frontend's echo. Both also map/unmap the ring page 20 times
 *    through the one shared gnttab handle first. The backend's state goes to 4 (Connected)
 *    once both ports are bound.
 * 5. Write ring[2048..4096) = (i*5+3)&255 and buffer[2 pages..4 pages) = (i*11+2)&255,
 *    unmap, unbind, close everything, state 6 (Closed), print "probe: ok", exit 0.
 *
 * Every failure prints "probe: FAIL ..." and exits 1; every wait has a timeout.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

#define PAGE 4096
#define MAX_BUF_PAGES 16
#define TIMEOUT_MS 10000

static int rounds = 200;
static xengnttab_handle *gt; /* shared by all threads */
static uint32_t front_id;
static uint32_t ring_ref;

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "probe: FAIL ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, " (errno %d: %s)\n", errno, strerror(errno));
    fflush(stdout);
    va_end(ap);
    exit(1);
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "probe: ");
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

static char *xs_read_str(struct xs_handle *xs, const char *dir, const char *node)
{
    char path[1200];
    unsigned int len;
    snprintf(path, sizeof(path), "%s/%s", dir, node);
    return xs_read(xs, XBT_NULL, path, &len);
}

static unsigned long xs_read_ulong(struct xs_handle *xs, const char *dir, const char *node)
{
    char *s = xs_read_str(xs, dir, node), *end;
    unsigned long v;
    if (!s)
        fail("reading %s/%s", dir, node);
    errno = 0;
    v = strtoul(s, &end, 0);
    if (errno || end == s || *end)
        fail("bad number %s/%s = %s", dir, node, s);
    free(s);
    return v;
}

static void xs_write_str(struct xs_handle *xs, const char *dir, const char *node,
                         const char *value)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, node);
    if (!xs_write(xs, XBT_NULL, path, value, strlen(value)))
        fail("writing %s", path);
}

/* Wait for a watch event on xs's fd (timeout: fail). */
static char **next_watch(struct xs_handle *xs, unsigned int *num)
{
    struct pollfd p = { xs_fileno(xs), POLLIN, 0 };
    for (;;) {
        char **w = xs_check_watch(xs);
        int r;
        if (w) {
            *num = 2;
            return w;
        }
        if (errno != EAGAIN)
            fail("xs_check_watch");
        r = poll(&p, 1, TIMEOUT_MS);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail("no XenStore watch event within %d ms", TIMEOUT_MS);
    }
}

/* Wait for `port` on `h` (timeout: fail), consume it and unmask it. */
static void wait_port(xenevtchn_handle *h, evtchn_port_t port, const char *who)
{
    struct pollfd p = { xenevtchn_fd(h), POLLIN, 0 };
    for (;;) {
        int r = poll(&p, 1, TIMEOUT_MS);
        xenevtchn_port_or_error_t got;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail("%s: no event on port %u within %d ms", who, port, TIMEOUT_MS);
        got = xenevtchn_pending(h);
        if (got < 0)
            fail("%s: xenevtchn_pending", who);
        if (xenevtchn_unmask(h, (evtchn_port_t)got) < 0)
            fail("%s: xenevtchn_unmask", who);
        if ((evtchn_port_t)got == port)
            return;
        fail("%s: event on unexpected port %d", who, got);
    }
}

static void churn_ring_mapping(const char *who)
{
    for (int i = 0; i < 20; i++) {
        uint8_t *p = xengnttab_map_grant_ref(gt, front_id, ring_ref, PROT_READ);
        if (!p)
            fail("%s: map_grant_ref (round %d)", who, i);
        if (p[1] != 8)
            fail("%s: ring byte 1 is %u, not 8", who, p[1]);
        if (xengnttab_unmap(gt, p, 1) < 0)
            fail("%s: unmap (round %d)", who, i);
    }
}

struct chan {
    const char *name;
    evtchn_port_t remote;
    int initiator; /* 1: we ping, the frontend echoes; 0: we echo */
    pthread_barrier_t *bound;
};

static void *chan_thread(void *arg)
{
    struct chan *c = arg;
    xenevtchn_handle *h = xenevtchn_open(NULL, 0);
    xenevtchn_port_or_error_t local;

    if (!h)
        fail("%s: xenevtchn_open", c->name);
    local = xenevtchn_bind_interdomain(h, front_id, c->remote);
    if (local < 0)
        fail("%s: bind_interdomain(%u, %u)", c->name, front_id, c->remote);
    wait_port(h, (evtchn_port_t)local, c->name); /* Xen sets a freshly bound port pending */
    churn_ring_mapping(c->name);
    pthread_barrier_wait(c->bound);
    for (int i = 0; i < rounds; i++) {
        if (c->initiator) {
            if (xenevtchn_notify(h, (evtchn_port_t)local) < 0)
                fail("%s: notify", c->name);
            wait_port(h, (evtchn_port_t)local, c->name);
        } else {
            wait_port(h, (evtchn_port_t)local, c->name);
            if (xenevtchn_notify(h, (evtchn_port_t)local) < 0)
                fail("%s: notify", c->name);
        }
    }
    if (xenevtchn_unbind(h, (evtchn_port_t)local) < 0)
        fail("%s: unbind", c->name);
    if (xenevtchn_close(h) < 0)
        fail("%s: close", c->name);
    say("%s: %d round trips", c->name, rounds);
    return NULL;
}

int main(int argc, char **argv)
{
    struct xs_handle *xs;
    char *front = NULL, dev[1100] = "", **w;
    unsigned int num, npages;
    uint32_t buf_refs[MAX_BUF_PAGES], domids[1];
    uint8_t *ring, *buf;
    xc_interface *xc;
    xc_domaininfo_t info[8];
    int n, found = 0;
    pthread_t t_req, t_evt;
    pthread_barrier_t bound;
    struct chan req = { "req", 0, 0, &bound }, evt = { "evt", 0, 1, &bound };

    if (argc < 2) {
        fprintf(stderr, "usage: %s BACKEND_DIR [ROUNDS]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        rounds = atoi(argv[2]);

    /* the toolstack library: is the frontend's domain there? */
    xc = xc_interface_open(NULL, NULL, 0);
    if (!xc)
        fail("xc_interface_open");

    xs = xs_open(0);
    if (!xs)
        fail("xs_open");
    if (!xs_watch(xs, argv[1], "probe"))
        fail("xs_watch %s", argv[1]);
    say("watching %s", argv[1]);
    while (!found) {
        /* any event under BACKEND_DIR (the first one fires at registration): scan it for
         * BACKEND_DIR/<domid>/<devid>/frontend, as real backends do */
        char **doms, **devs;
        unsigned int nd, nv;
        w = next_watch(xs, &num);
        free(w);
        doms = xs_directory(xs, XBT_NULL, argv[1], &nd);
        for (unsigned int i = 0; doms && i < nd && !found; i++) {
            char dpath[512];
            snprintf(dpath, sizeof(dpath), "%s/%s", argv[1], doms[i]);
            devs = xs_directory(xs, XBT_NULL, dpath, &nv);
            for (unsigned int j = 0; devs && j < nv && !found; j++) {
                snprintf(dev, sizeof(dev), "%s/%s", dpath, devs[j]);
                front = xs_read_str(xs, dev, "frontend");
                if (front) {
                    front_id = (uint32_t)xs_read_ulong(xs, dev, "frontend-id");
                    found = 1;
                }
            }
            free(devs);
        }
        free(doms);
    }
    say("device %s, frontend %s (domain %u)", dev, front, front_id);

    n = xc_domain_getinfolist(xc, front_id, 8, info);
    if (n < 1 || info[0].domain != front_id)
        fail("xc_domain_getinfolist: domain %u not found (%d)", front_id, n);

    /* wait for the frontend to be Initialised */
    {
        char path[1200];
        snprintf(path, sizeof(path), "%s/state", front);
        if (!xs_watch(xs, path, "fstate"))
            fail("xs_watch %s", path);
        for (;;) {
            char *st = xs_read_str(xs, front, "state");
            int ok = st && strcmp(st, "3") == 0;
            free(st);
            if (ok)
                break;
            free(next_watch(xs, &num));
        }
        xs_unwatch(xs, path, "fstate");
    }

    ring_ref = (uint32_t)xs_read_ulong(xs, front, "ring-ref");
    npages = (unsigned int)xs_read_ulong(xs, front, "num-buf-pages");
    if (npages < 2 || npages > MAX_BUF_PAGES || npages % 2)
        fail("num-buf-pages %u", npages);
    for (unsigned int i = 0; i < npages; i++) {
        char node[32];
        snprintf(node, sizeof(node), "buf-ref-%u", i);
        buf_refs[i] = (uint32_t)xs_read_ulong(xs, front, node);
    }
    req.remote = (evtchn_port_t)xs_read_ulong(xs, front, "event-channel-req");
    evt.remote = (evtchn_port_t)xs_read_ulong(xs, front, "event-channel-evt");

    gt = xengnttab_open(NULL, 0);
    if (!gt)
        fail("xengnttab_open");
    if (xengnttab_set_max_grants(gt, 64) < 0)
        fail("xengnttab_set_max_grants");
    domids[0] = front_id;
    ring = xengnttab_map_grant_refs(gt, 1, domids, &ring_ref, PROT_READ | PROT_WRITE);
    if (!ring)
        fail("map ring-ref %u", ring_ref);
    buf = xengnttab_map_domain_grant_refs(gt, npages, front_id, buf_refs,
                                          PROT_READ | PROT_WRITE);
    if (!buf)
        fail("map %u buffer pages", npages);
    for (int i = 0; i < PAGE / 2; i++)
        if (ring[i] != (uint8_t)(i * 7 + 1))
            fail("ring byte %d is %u, expected %u", i, ring[i], (uint8_t)(i * 7 + 1));
    for (size_t i = 0; i < (size_t)PAGE * npages / 2; i++)
        if (buf[i] != (uint8_t)(i * 31 + 7))
            fail("buffer byte %zu is %u", i, buf[i]);
    say("frontend data checked (ring + %u pages)", npages);

    pthread_barrier_init(&bound, NULL, 3);
    if (pthread_create(&t_req, NULL, chan_thread, &req) ||
        pthread_create(&t_evt, NULL, chan_thread, &evt))
        fail("pthread_create");
    pthread_barrier_wait(&bound);
    xs_write_str(xs, dev, "state", "4");
    say("connected");
    pthread_join(t_req, NULL);
    pthread_join(t_evt, NULL);
    pthread_barrier_destroy(&bound);

    for (int i = PAGE / 2; i < PAGE; i++)
        ring[i] = (uint8_t)(i * 5 + 3);
    for (size_t i = (size_t)PAGE * npages / 2; i < (size_t)PAGE * npages; i++)
        buf[i] = (uint8_t)(i * 11 + 2);
    if (xengnttab_unmap(gt, buf, npages) < 0)
        fail("unmap buffer");
    if (xengnttab_unmap(gt, ring, 1) < 0)
        fail("unmap ring");
    if (xengnttab_unmap(gt, ring, 1) == 0)
        fail("a second unmap of the ring succeeded");
    if (xengnttab_close(gt) < 0)
        fail("xengnttab_close");
    xs_write_str(xs, dev, "state", "6");
    xs_unwatch(xs, argv[1], "probe");
    xs_close(xs);
    xc_interface_close(xc);
    free(front);
    say("ok");
    return 0;
}
