/*
 * libxengnttab.so.1 for the simulated Xen: the mapping side (xengnttab_*, Linux gntdev)
 * and the granting side (xengntshr_*, Linux gntalloc).
 *
 * A handle is one connection to the domain's hypervisor socket; the sim ties mappings and
 * shared pages to it, so closing the handle (or dying) releases them. The sim passes one
 * memfd per page; N pages become one contiguous mapping (a PROT_NONE reservation one page
 * longer, each page mapped over its slot by MAP_FIXED, the last left as a guard). A handle
 * may be used by many threads at once.
 */
#include "simhv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if __has_include(<xengnttab.h>) && !defined(SNDIF_NO_XEN_HEADERS)
#include <xengnttab.h>
#else
typedef uint32_t evtchn_port_t;
typedef uint32_t grant_ref_t;
typedef struct xengntdev_handle xengnttab_handle;
typedef struct xengntdev_handle xengntshr_handle;
struct xentoollog_logger;
struct xengnttab_grant_copy_segment {
    union xengnttab_copy_ptr {
        void *virt;
        struct {
            uint32_t ref;
            uint16_t offset;
            uint16_t domid;
        } foreign;
    } source, dest;
    uint16_t len;
    uint16_t flags;
    int16_t status;
};
typedef struct xengnttab_grant_copy_segment xengnttab_grant_copy_segment_t;
#endif

#define EXPORT __attribute__((visibility("default")))
#define HANDLE_MAGIC 0x53474e54u /* "SGNT" */
#define PAGE SIMHV_PAGE_SIZE
#define MAX_PER_MAP 1024u     /* the sim's limit per GNT_MAP / GNT_ALLOC */
#define MAX_PAGES (1u << 20)  /* sanity bound on one call */
#define GRANT_READONLY 0x1u
#define NOTIFY_NONE ((uint32_t)-1)
#define GNTCOPY_source_gref_ (1 << 0)
#define GNTCOPY_dest_gref_ (1 << 1)
#define GNTST_okay_ 0
#define GNTST_general_error_ (-1)

enum { KIND_TAB = 1, KIND_SHR = 2 };

struct region {
    struct region *next;
    uint8_t *addr;
    uint32_t npages;
    uint32_t nids;      /* map ids (KIND_TAB) or page ids (KIND_SHR) */
    uint32_t *ids;
};

struct xengntdev_handle {
    uint32_t magic;
    int kind;
    struct simhv hv;
    pthread_mutex_t lock;
    struct region *regions;
    uint32_t max_grants;
};

static int valid(struct xengntdev_handle *h, int kind)
{
    if (!h || h->magic != HANDLE_MAGIC || h->kind != kind) {
        errno = EBADF;
        return 0;
    }
    return 1;
}

static struct xengntdev_handle *handle_new(int kind)
{
    struct xengntdev_handle *h = calloc(1, sizeof(*h));
    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    if (simhv_open(&h->hv) < 0) {
        int e = errno;
        free(h);
        errno = e;
        return NULL;
    }
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        simhv_close(&h->hv);
        free(h);
        errno = ENOMEM;
        return NULL;
    }
    h->kind = kind;
    h->magic = HANDLE_MAGIC;
    return h;
}

static void region_free(struct region *r)
{
    free(r->ids);
    free(r);
}

static void send_unmaps(struct xengntdev_handle *h, const uint32_t *mids, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t pl[4];
        struct simhv_reply rep;
        simhv_put32(pl, mids[i]);
        if (simhv_call(&h->hv, SIMHV_GNT_UNMAP, pl, 4, NULL, 0, 0, &rep) == 0)
            simhv_reply_free(&rep);
    }
}

static int send_free(struct xengntdev_handle *h, const uint32_t *ids, uint32_t n)
{
    int rc = 0;
    for (uint32_t done = 0; done < n;) {
        uint32_t k = n - done > MAX_PER_MAP ? MAX_PER_MAP : n - done;
        uint8_t *pl = malloc(4 + 4 * (size_t)k);
        struct simhv_reply rep;
        if (!pl) {
            errno = ENOMEM;
            return -1;
        }
        simhv_put32(pl, k);
        for (uint32_t i = 0; i < k; i++)
            simhv_put32(pl + 4 + 4 * i, ids[done + i]);
        if (simhv_call_ok(&h->hv, SIMHV_GNT_FREE, pl, 4 + 4 * (size_t)k, NULL, 0, 0,
                          &rep) == 0)
            simhv_reply_free(&rep);
        else
            rc = -1;
        free(pl);
        done += k;
    }
    return rc;
}

/* gntdev/gntalloc SET_UNMAP_NOTIFY, as libxengnttab asks it: a byte to clear when the
 * offset is inside the region, an event when a port is given. The sim does both at unmap
 * (or free), also when the process dies, as the Linux drivers do. */
static int set_notify(struct xengntdev_handle *h, uint32_t op, uint32_t id, uint32_t npages,
                      uint32_t notify_offset, uint32_t notify_port)
{
    uint8_t pl[16];
    uint32_t flags = 0;
    struct simhv_reply rep;

    if (notify_offset < (size_t)npages * PAGE)
        flags |= SIMHV_NOTIFY_CLEAR_BYTE;
    if (notify_port != NOTIFY_NONE)
        flags |= SIMHV_NOTIFY_SEND_EVENT;
    if (!flags)
        return 0;
    simhv_put32(pl, id);
    simhv_put32(pl + 4, flags);
    simhv_put32(pl + 8, notify_offset);
    simhv_put32(pl + 12, notify_port);
    if (simhv_call_ok(&h->hv, op, pl, sizeof(pl), NULL, 0, 0, &rep) < 0)
        return -1;
    simhv_reply_free(&rep);
    return 0;
}

/* The address space a mapping of npages takes: its pages, then one left PROT_NONE. An
 * access past the pages a process mapped then faults, as past a gntdev mapping on real
 * Xen (snd_be's unchecked out-of-bounds READ dies of SIGSEGV there); without the guard,
 * the next mapping, placed right after by mmap, would be read instead. */
static size_t span(uint32_t npages)
{
    return ((size_t)npages + 1) * PAGE;
}

static void *reserve(uint32_t npages)
{
    void *a = mmap(NULL, span(npages), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return a == MAP_FAILED ? NULL : a;
}

/* Map fds[0..n) at addr, closing them. */
static int place(uint8_t *addr, const int *fds, uint32_t n, int prot)
{
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (rc == 0 && mmap(addr + (size_t)i * PAGE, PAGE, prot, MAP_SHARED | MAP_FIXED,
                            fds[i], 0) == MAP_FAILED)
            rc = -1;
    }
    return rc;
}

/* ------------------------------------------------------------------ mapping side */

EXPORT xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger,
                                        unsigned open_flags)
{
    (void)logger;
    (void)open_flags;
    return handle_new(KIND_TAB);
}

static void close_handle(struct xengntdev_handle *h)
{
    struct region *r, *next;
    pthread_mutex_lock(&h->lock);
    h->magic = 0;
    for (r = h->regions; r; r = next) {
        next = r->next;
        munmap(r->addr, span(r->npages));
        /* release synchronously (the sim would also do it when it notices the closed
         * connection, but later): gone when close returns, as with the Linux devices */
        if (h->kind == KIND_TAB)
            send_unmaps(h, r->ids, r->nids);
        else
            send_free(h, r->ids, r->nids);
        region_free(r);
    }
    h->regions = NULL;
    simhv_close(&h->hv);
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

EXPORT int xengnttab_close(xengnttab_handle *xgt)
{
    if (!xgt)
        return 0;
    if (!valid(xgt, KIND_TAB))
        return -1;
    close_handle(xgt);
    return 0;
}

EXPORT int xengnttab_fd(xengnttab_handle *xgt)
{
    if (!valid(xgt, KIND_TAB))
        return -1;
    return xgt->hv.fd;
}

EXPORT int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants)
{
    if (!valid(xgt, KIND_TAB))
        return -1;
    pthread_mutex_lock(&xgt->lock);
    xgt->max_grants = nr_grants;
    pthread_mutex_unlock(&xgt->lock);
    return 0;
}

/* One GNT_MAP of refs[0..n) of `granter`, placed at addr. Returns 0 and the map id. */
static int map_run(struct xengntdev_handle *h, uint8_t *addr, uint32_t granter,
                   const uint32_t *refs, uint32_t n, int prot, uint32_t *mid)
{
    size_t len = 12 + 4 * (size_t)n;
    uint8_t *pl = malloc(len);
    struct simhv_reply rep;
    int rc;

    if (!pl) {
        errno = ENOMEM;
        return -1;
    }
    simhv_put32(pl, granter);
    simhv_put32(pl + 4, (prot & PROT_WRITE) ? 0 : GRANT_READONLY);
    simhv_put32(pl + 8, n);
    for (uint32_t i = 0; i < n; i++)
        simhv_put32(pl + 12 + 4 * i, refs[i]);
    rc = simhv_call_ok(&h->hv, SIMHV_GNT_MAP, pl, len, NULL, 0, 1, &rep);
    free(pl);
    if (rc < 0)
        return -1;
    *mid = rep.extra;
    if ((uint32_t)rep.nfds != n) {
        simhv_reply_free(&rep);
        send_unmaps(h, mid, 1);
        errno = EPROTO;
        return -1;
    }
    rc = place(addr, rep.fds, n, (prot & PROT_WRITE) ? PROT_READ | PROT_WRITE : PROT_READ);
    if (rc < 0) {
        int e = errno;
        simhv_reply_free(&rep);
        send_unmaps(h, mid, 1);
        errno = e;
        return -1;
    }
    simhv_reply_free(&rep); /* closes the page fds: the mapping keeps them alive */
    return 0;
}

static void *map_refs(struct xengntdev_handle *h, uint32_t count, const uint32_t *domids,
                      uint32_t domid_stride, const uint32_t *refs, int prot,
                      uint32_t notify_offset, uint32_t notify_port)
{
    struct region *r;
    uint8_t *addr;
    uint32_t i = 0;

    if (!valid(h, KIND_TAB))
        return NULL;
    if (count == 0 || count > MAX_PAGES || !refs || !domids) {
        errno = EINVAL;
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r)
        r->ids = calloc(count, sizeof(uint32_t));
    if (!r || !r->ids) {
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    addr = reserve(count);
    if (!addr) {
        region_free(r);
        return NULL;
    }
    r->addr = addr;
    r->npages = count;
    pthread_mutex_lock(&h->lock);
    while (i < count) {
        uint32_t dom = domids[i * domid_stride], n = 1;
        while (i + n < count && n < MAX_PER_MAP && domids[(i + n) * domid_stride] == dom)
            n++;
        if (map_run(h, addr + (size_t)i * PAGE, dom, refs + i, n, prot,
                    &r->ids[r->nids]) < 0) {
            int e = errno;
            munmap(addr, span(count));
            send_unmaps(h, r->ids, r->nids);
            pthread_mutex_unlock(&h->lock);
            region_free(r);
            errno = e;
            return NULL;
        }
        r->nids++;
        i += n;
    }
    if (r->nids == 1 &&
        set_notify(h, SIMHV_GNT_MAP_NOTIFY, r->ids[0], count, notify_offset, notify_port) < 0) {
        /* libxengnttab: a refused SET_UNMAP_NOTIFY fails the map */
        int e = errno;
        munmap(addr, span(count));
        send_unmaps(h, r->ids, r->nids);
        pthread_mutex_unlock(&h->lock);
        region_free(r);
        errno = e;
        return NULL;
    }
    /* gntdev's mmap sets VM_DONTCOPY: a child forked after mapping does not inherit the
     * foreign pages (else it would keep them past unmap and revoke) */
    if (madvise(addr, (size_t)count * PAGE, MADV_DONTFORK) < 0) {
        int e = errno;
        munmap(addr, span(count));
        send_unmaps(h, r->ids, r->nids);
        pthread_mutex_unlock(&h->lock);
        region_free(r);
        errno = e;
        return NULL;
    }
    r->next = h->regions;
    h->regions = r;
    pthread_mutex_unlock(&h->lock);
    return addr;
}

EXPORT void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref,
                                     int prot)
{
    return map_refs(xgt, 1, &domid, 0, &ref, prot, NOTIFY_NONE, NOTIFY_NONE);
}

EXPORT void *xengnttab_map_grant_refs(xengnttab_handle *xgt, uint32_t count,
                                      uint32_t *domids, uint32_t *refs, int prot)
{
    return map_refs(xgt, count, domids, 1, refs, prot, NOTIFY_NONE, NOTIFY_NONE);
}

EXPORT void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt, uint32_t count,
                                             uint32_t domid, uint32_t *refs, int prot)
{
    return map_refs(xgt, count, &domid, 0, refs, prot, NOTIFY_NONE, NOTIFY_NONE);
}

/* As gntdev: at unmap (or the process's death) the byte at notify_offset is cleared (an
 * offset past the page: no byte) and an event sent on notify_port (-1: none), a port of
 * this domain bound through libxenevtchn (else EINVAL). A read-only map can't have a byte
 * cleared: EINVAL. */
EXPORT void *xengnttab_map_grant_ref_notify(xengnttab_handle *xgt, uint32_t domid,
                                            uint32_t ref, int prot, uint32_t notify_offset,
                                            evtchn_port_t notify_port)
{
    return map_refs(xgt, 1, &domid, 0, &ref, prot, notify_offset, notify_port);
}

static struct region *take_region(struct xengntdev_handle *h, void *start, uint32_t count)
{
    for (struct region **pp = &h->regions; *pp; pp = &(*pp)->next) {
        struct region *r = *pp;
        if (r->addr == start && r->npages == count) {
            *pp = r->next;
            return r;
        }
    }
    return NULL;
}

EXPORT int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count)
{
    struct region *r;

    if (!valid(xgt, KIND_TAB))
        return -1;
    pthread_mutex_lock(&xgt->lock);
    r = take_region(xgt, start_address, count);
    if (!r) {
        pthread_mutex_unlock(&xgt->lock);
        errno = EINVAL;
        return -1;
    }
    munmap(r->addr, span(r->npages));
    send_unmaps(xgt, r->ids, r->nids); /* the sim does any unmap notification */
    pthread_mutex_unlock(&xgt->lock);
    region_free(r);
    return 0;
}

/* Copy through temporary mappings of each foreign page. */
EXPORT int xengnttab_grant_copy(xengnttab_handle *xgt, uint32_t count,
                                xengnttab_grant_copy_segment_t *segs)
{
    if (!valid(xgt, KIND_TAB))
        return -1;
    if (count && !segs) {
        errno = EINVAL;
        return -1;
    }
    for (uint32_t i = 0; i < count; i++) {
        xengnttab_grant_copy_segment_t *s = &segs[i];
        int src_f = s->flags & GNTCOPY_source_gref_, dst_f = s->flags & GNTCOPY_dest_gref_;
        uint8_t *src = NULL, *dst = NULL, *sm = NULL, *dm = NULL;
        s->status = GNTST_okay_;
        if ((src_f && s->source.foreign.offset + (size_t)s->len > PAGE) ||
            (dst_f && s->dest.foreign.offset + (size_t)s->len > PAGE)) {
            s->status = GNTST_general_error_;
            continue;
        }
        if (src_f) {
            uint32_t dom = s->source.foreign.domid, ref = s->source.foreign.ref;
            sm = map_refs(xgt, 1, &dom, 0, &ref, PROT_READ, NOTIFY_NONE, NOTIFY_NONE);
            src = sm ? sm + s->source.foreign.offset : NULL;
        } else {
            src = s->source.virt;
        }
        if (dst_f) {
            uint32_t dom = s->dest.foreign.domid, ref = s->dest.foreign.ref;
            dm = map_refs(xgt, 1, &dom, 0, &ref, PROT_READ | PROT_WRITE, NOTIFY_NONE,
                          NOTIFY_NONE);
            dst = dm ? dm + s->dest.foreign.offset : NULL;
        } else {
            dst = s->dest.virt;
        }
        if (src && dst)
            memmove(dst, src, s->len);
        else
            s->status = GNTST_general_error_;
        if (sm)
            xengnttab_unmap(xgt, sm, 1);
        if (dm)
            xengnttab_unmap(xgt, dm, 1);
    }
    return 0;
}

/* ------------------------------------------------------------------ granting side */

EXPORT xengntshr_handle *xengntshr_open(struct xentoollog_logger *logger,
                                        unsigned open_flags)
{
    (void)logger;
    (void)open_flags;
    return handle_new(KIND_SHR);
}

EXPORT int xengntshr_close(xengntshr_handle *xgs)
{
    if (!xgs)
        return 0;
    if (!valid(xgs, KIND_SHR))
        return -1;
    close_handle(xgs);
    return 0;
}

EXPORT int xengntshr_fd(xengntshr_handle *xgs)
{
    if (!valid(xgs, KIND_SHR))
        return -1;
    return xgs->hv.fd;
}

static void *share(xengntshr_handle *h, uint32_t domid, int count, uint32_t *refs,
                   int writable, uint32_t notify_offset, uint32_t notify_port)
{
    struct region *r;
    uint8_t *addr;
    uint32_t n = (uint32_t)count, done = 0;
    int e;

    if (!valid(h, KIND_SHR))
        return NULL;
    if (count <= 0 || n > MAX_PAGES || !refs) {
        errno = EINVAL;
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r)
        r->ids = calloc(n, sizeof(uint32_t));
    if (!r || !r->ids) {
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    addr = reserve(n);
    if (!addr) {
        region_free(r);
        return NULL;
    }
    r->addr = addr;
    r->npages = n;
    pthread_mutex_lock(&h->lock);
    while (done < n) {
        uint32_t k = n - done > MAX_PER_MAP ? MAX_PER_MAP : n - done;
        uint8_t pl[4];
        struct simhv_reply rep;
        simhv_put32(pl, k);
        if (simhv_call_ok(&h->hv, SIMHV_GNT_ALLOC, pl, 4, NULL, 0, 1, &rep) < 0)
            goto fail;
        if ((uint32_t)rep.nfds != k || rep.len < 4 * (size_t)k) {
            for (uint32_t i = 0; i + 1 <= rep.len / 4 && i < k; i++)
                r->ids[r->nids++] = simhv_get32(rep.data + 4 * i);
            simhv_reply_free(&rep);
            errno = EPROTO;
            goto fail;
        }
        for (uint32_t i = 0; i < k; i++)
            r->ids[r->nids++] = simhv_get32(rep.data + 4 * i);
        if (place(addr + (size_t)done * PAGE, rep.fds, k, PROT_READ | PROT_WRITE) < 0) {
            e = errno;
            simhv_reply_free(&rep);
            errno = e;
            goto fail;
        }
        simhv_reply_free(&rep);
        done += k;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint8_t pl[12];
        struct simhv_reply rep;
        simhv_put32(pl, r->ids[i]);
        simhv_put32(pl + 4, domid);
        simhv_put32(pl + 8, writable ? 0 : GRANT_READONLY);
        if (simhv_call_ok(&h->hv, SIMHV_GNT_GRANT, pl, 12, NULL, 0, 0, &rep) < 0)
            goto fail;
        refs[i] = rep.len >= 4 ? simhv_get32(rep.data) : 0;
        simhv_reply_free(&rep);
    }
    if (n == 1 &&
        set_notify(h, SIMHV_GNT_PAGE_NOTIFY, r->ids[0], 1, notify_offset, notify_port) < 0)
        goto fail;
    r->next = h->regions;
    h->regions = r;
    pthread_mutex_unlock(&h->lock);
    return addr;
fail:
    e = errno;
    munmap(addr, span(n));
    send_free(h, r->ids, r->nids);
    pthread_mutex_unlock(&h->lock);
    region_free(r);
    errno = e;
    return NULL;
}

EXPORT void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid, int count,
                                   uint32_t *refs, int writable)
{
    return share(xgs, domid, count, refs, writable, NOTIFY_NONE, NOTIFY_NONE);
}

EXPORT void *xengntshr_share_page_notify(xengntshr_handle *xgs, uint32_t domid,
                                         uint32_t *ref, int writable,
                                         uint32_t notify_offset, evtchn_port_t notify_port)
{
    /* as gntalloc: at unshare (or the process's death) the byte is cleared (an offset past
     * the page: none) and an event sent on notify_port (-1: none) */
    return share(xgs, domid, 1, ref, writable, notify_offset, notify_port);
}

EXPORT int xengntshr_unshare(xengntshr_handle *xgs, void *start_address, uint32_t count)
{
    struct region *r;
    int rc;

    if (!valid(xgs, KIND_SHR))
        return -1;
    pthread_mutex_lock(&xgs->lock);
    r = take_region(xgs, start_address, count);
    if (!r) {
        pthread_mutex_unlock(&xgs->lock);
        errno = EINVAL;
        return -1;
    }
    munmap(r->addr, span(r->npages));
    rc = send_free(xgs, r->ids, r->nids); /* ends foreign access; mapped grants stay busy */
    pthread_mutex_unlock(&xgs->lock);
    region_free(r);
    return rc;
}
