/*
 * asan_backend: a deliberately buggy vsnd backend stand-in, built with
 * -fsanitize=address by tests/test_supervisor_asan.py and run by the backend supervisor
 * through `exec:` on the simulated Xen (Debian's libxenstore, the sim's replacement
 * libxenevtchn and libxengnttab).
 *
 *   asan_backend BACKEND_ROOT          (e.g. /local/domain/0/backend/vsnd)
 *
 * 1. Watch BACKEND_ROOT; find BACKEND_ROOT/<feid>/<devid>/frontend; state = 2 (InitWait).
 * 2. Wait for the frontend's state 3 (Initialised); map stream 0/0's request ring and bind
 *    its event channel; state = 4 (Connected).
 * 3. On the first notification: copy the ring page into a heap buffer of one page and read
 *    the request "after" it: one page plus (req_prod & 31) octets, past the end of the
 *    copy. AddressSanitizer reports a heap-buffer-overflow and the process exits.
 *
 * Every wait has a timeout (exit 3).
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

#define PAGE 4096
#define TIMEOUT_MS 60000

static void die(const char *what)
{
    printf("asan_backend: FAIL %s (errno %d: %s)\n", what, errno, strerror(errno));
    fflush(stdout);
    exit(3);
}

static char *rd(struct xs_handle *xs, const char *dir, const char *node)
{
    char path[1024];
    unsigned int len;
    snprintf(path, sizeof(path), "%s/%s", dir, node);
    return xs_read(xs, XBT_NULL, path, &len);
}

static unsigned long rd_ulong(struct xs_handle *xs, const char *dir, const char *node)
{
    char *s = rd(xs, dir, node);
    unsigned long v;
    if (!s)
        die(node);
    v = strtoul(s, NULL, 10);
    free(s);
    return v;
}

static void wr(struct xs_handle *xs, const char *dir, const char *node, const char *value)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, node);
    if (!xs_write(xs, XBT_NULL, path, value, strlen(value)))
        die(path);
}

static void next_watch(struct xs_handle *xs)
{
    struct pollfd p = { xs_fileno(xs), POLLIN, 0 };
    for (;;) {
        char **w = xs_check_watch(xs);
        if (w) {
            free(w);
            return;
        }
        if (errno != EAGAIN)
            die("xs_check_watch");
        if (poll(&p, 1, TIMEOUT_MS) <= 0 && errno != EINTR)
            die("no XenStore watch event in time");
    }
}

int main(int argc, char **argv)
{
    struct xs_handle *xs;
    char dev[512] = "", *front = NULL, stream[600], fstate[600];
    unsigned int feid = 0;
    uint32_t ring_ref, domids[1];
    xengnttab_handle *gt;
    xenevtchn_handle *ev;
    xenevtchn_port_or_error_t local;
    volatile uint8_t *ring;

    if (argc != 2) {
        fprintf(stderr, "usage: %s BACKEND_ROOT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    xs = xs_open(0);
    if (!xs)
        die("xs_open");
    if (!xs_watch(xs, argv[1], "root"))
        die("xs_watch");
    while (!front) {
        char **doms, **devs;
        unsigned int nd = 0, nv = 0;
        next_watch(xs);
        doms = xs_directory(xs, XBT_NULL, argv[1], &nd);
        for (unsigned int i = 0; doms && i < nd && !front; i++) {
            char dpath[256];
            snprintf(dpath, sizeof(dpath), "%s/%s", argv[1], doms[i]);
            devs = xs_directory(xs, XBT_NULL, dpath, &nv);
            for (unsigned int j = 0; devs && j < nv && !front; j++) {
                char *st;
                snprintf(dev, sizeof(dev), "%s/%s", dpath, devs[j]);
                st = rd(xs, dev, "state");
                /* a fresh device only (state 1): not one being removed */
                if (st && strcmp(st, "1") == 0)
                    front = rd(xs, dev, "frontend");
                free(st);
                if (front)
                    feid = (unsigned int)rd_ulong(xs, dev, "frontend-id");
            }
            free(devs);
        }
        free(doms);
    }
    wr(xs, dev, "state", "2");
    printf("asan_backend: device %s, frontend %s (domain %u): InitWait\n", dev, front, feid);

    snprintf(fstate, sizeof(fstate), "%s/state", front);
    if (!xs_watch(xs, fstate, "fe"))
        die("xs_watch fe state");
    for (;;) {
        char *st = rd(xs, front, "state");
        int ok = st && strcmp(st, "3") == 0;
        free(st);
        if (ok)
            break;
        next_watch(xs);
    }
    snprintf(stream, sizeof(stream), "%s/0/0", front);
    ring_ref = (uint32_t)rd_ulong(xs, stream, "ring-ref");
    gt = xengnttab_open(NULL, 0);
    ev = xenevtchn_open(NULL, 0);
    if (!gt || !ev)
        die("open gnttab/evtchn");
    domids[0] = feid;
    ring = xengnttab_map_grant_refs(gt, 1, domids, &ring_ref, PROT_READ | PROT_WRITE);
    if (!ring)
        die("map ring");
    local = xenevtchn_bind_interdomain(ev, feid,
                                       (evtchn_port_t)rd_ulong(xs, stream, "event-channel"));
    if (local < 0)
        die("bind");
    wr(xs, dev, "state", "4");
    printf("asan_backend: connected\n");

    {
        struct pollfd p = { xenevtchn_fd(ev), POLLIN, 0 };
        xenevtchn_port_or_error_t got;
        uint8_t *copy;
        uint32_t req_prod;
        do { /* Xen sets a freshly bound port pending: wait for a request itself */
            if (poll(&p, 1, TIMEOUT_MS) <= 0)
                die("no request in time");
            got = xenevtchn_pending(ev);
            if (got >= 0)
                xenevtchn_unmask(ev, (evtchn_port_t)got);
            req_prod = *(volatile uint32_t *)ring;
        } while (req_prod == 0);
        printf("asan_backend: request seen, req_prod %u\n", req_prod);
        copy = malloc(PAGE);
        if (!copy)
            die("malloc");
        memcpy(copy, (const void *)ring, PAGE);
        /* the bug: index the copy as if requests followed the page */
        printf("asan_backend: byte %u\n", copy[PAGE + (req_prod & 31)]);
        free(copy);
    }
    return 0;
}
