/*
 * libxenctrl.so.4.17 for the simulated Xen.
 *
 * Simulated: xc_interface_open/close, xc_domain_getinfolist and xc_domain_getinfo (from
 * the sim's domain list; domain 0 only, like the real domctl), xc_version (4.17), the
 * error helpers, and the compat event-channel / grant-table API (xc_evtchn_*,
 * xc_gnttab_*, xc_gntshr_*), which forwards to the replacement libxenevtchn and
 * libxengnttab. Every other function is a generated stub failing with ENOSYS.
 */
#include "simhv.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<xenctrl.h>) && !defined(SNDIF_NO_XEN_HEADERS)
#define XC_WANT_COMPAT_EVTCHN_API 1
#define XC_WANT_COMPAT_GNTTAB_API 1
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#define HAVE_XENCTRL_H 1
#else
/* Minimal copies of Xen 4.17's declarations (checked against the real header whenever it
 * is installed: see the static assertions below). */
typedef struct xentoollog_logger xentoollog_logger;
typedef struct xc_interface_core xc_interface;
typedef uint8_t xen_domain_handle_t[16];
typedef uint32_t evtchn_port_t;
typedef int xc_evtchn_port_or_error_t;
typedef struct xenevtchn_handle xc_evtchn;
typedef struct xengntdev_handle xc_gnttab;
typedef struct xengntdev_handle xc_gntshr;
struct xen_arch_domainconfig {
    uint32_t emulation_flags;
    uint32_t misc_flags;
};
typedef struct xen_domctl_getdomaininfo {
    uint16_t domain;
    uint16_t pad1;
    uint32_t flags;
    uint64_t tot_pages __attribute__((aligned(8)));
    uint64_t max_pages __attribute__((aligned(8)));
    uint64_t outstanding_pages __attribute__((aligned(8)));
    uint64_t shr_pages __attribute__((aligned(8)));
    uint64_t paged_pages __attribute__((aligned(8)));
    uint64_t shared_info_frame __attribute__((aligned(8)));
    uint64_t cpu_time __attribute__((aligned(8)));
    uint32_t nr_online_vcpus;
    uint32_t max_vcpu_id;
    uint32_t ssidref;
    xen_domain_handle_t handle;
    uint32_t cpupool;
    uint8_t gpaddr_bits;
    uint8_t pad2[7];
    struct xen_arch_domainconfig arch_config;
} xc_domaininfo_t;
typedef struct xc_dominfo {
    uint32_t domid;
    uint32_t ssidref;
    unsigned int dying:1, crashed:1, shutdown:1, paused:1, blocked:1, running:1, hvm:1,
        debugged:1, xenstore:1, hap:1;
    unsigned int shutdown_reason;
    unsigned long nr_pages;
    unsigned long nr_outstanding_pages;
    unsigned long nr_shared_pages;
    unsigned long nr_paged_pages;
    unsigned long shared_info_frame;
    uint64_t cpu_time;
    unsigned long max_memkb;
    unsigned int nr_online_vcpus;
    unsigned int max_vcpu_id;
    xen_domain_handle_t handle;
    unsigned int cpupool;
    uint8_t gpaddr_bits;
    struct xen_arch_domainconfig arch_config;
} xc_dominfo_t;
enum xc_error_code { XC_ERROR_NONE = 0, XC_INTERNAL_ERROR = 1, XC_INVALID_KERNEL = 2,
                     XC_INVALID_PARAM = 3, XC_OUT_OF_MEMORY = 4 };
#define XC_MAX_ERROR_MSG_LEN 1024
typedef struct xc_error {
    enum xc_error_code code;
    char message[XC_MAX_ERROR_MSG_LEN];
} xc_error;
#define XEN_DOMINF_running (1U << 5)
#define XENVER_version 0
#define XENVER_extraversion 1
#define XENVER_compile_info 2
#define XENVER_capabilities 3
#define XENVER_changeset 4
#define XENVER_platform_parameters 5
#define XENVER_get_features 6
#define XENVER_pagesize 7
#define XENVER_guest_handle 8
#define XENVER_commandline 9
#define XENVER_build_id 10
/* forwarded compat API (declared by the real libraries' headers otherwise) */
struct xenevtchn_handle *xenevtchn_open(xentoollog_logger *, unsigned int);
int xenevtchn_close(struct xenevtchn_handle *);
int xenevtchn_fd(struct xenevtchn_handle *);
int xenevtchn_notify(struct xenevtchn_handle *, evtchn_port_t);
int xenevtchn_bind_unbound_port(struct xenevtchn_handle *, uint32_t);
int xenevtchn_bind_interdomain(struct xenevtchn_handle *, uint32_t, evtchn_port_t);
int xenevtchn_bind_virq(struct xenevtchn_handle *, unsigned int);
int xenevtchn_unbind(struct xenevtchn_handle *, evtchn_port_t);
int xenevtchn_pending(struct xenevtchn_handle *);
int xenevtchn_unmask(struct xenevtchn_handle *, evtchn_port_t);
struct xengntdev_handle *xengnttab_open(xentoollog_logger *, unsigned);
int xengnttab_close(struct xengntdev_handle *);
void *xengnttab_map_grant_ref(struct xengntdev_handle *, uint32_t, uint32_t, int);
void *xengnttab_map_grant_refs(struct xengntdev_handle *, uint32_t, uint32_t *, uint32_t *,
                               int);
void *xengnttab_map_domain_grant_refs(struct xengntdev_handle *, uint32_t, uint32_t,
                                      uint32_t *, int);
void *xengnttab_map_grant_ref_notify(struct xengntdev_handle *, uint32_t, uint32_t, int,
                                     uint32_t, evtchn_port_t);
int xengnttab_unmap(struct xengntdev_handle *, void *, uint32_t);
int xengnttab_set_max_grants(struct xengntdev_handle *, uint32_t);
struct xengntdev_handle *xengntshr_open(xentoollog_logger *, unsigned);
int xengntshr_close(struct xengntdev_handle *);
void *xengntshr_share_pages(struct xengntdev_handle *, uint32_t, int, uint32_t *, int);
void *xengntshr_share_page_notify(struct xengntdev_handle *, uint32_t, uint32_t *, int,
                                  uint32_t, evtchn_port_t);
int xengntshr_unshare(struct xengntdev_handle *, void *, uint32_t);
#endif

_Static_assert(sizeof(xc_domaininfo_t) == 112, "xen_domctl_getdomaininfo layout (4.17)");
_Static_assert(offsetof(xc_domaininfo_t, handle) == 76, "xen_domctl_getdomaininfo.handle");
_Static_assert(offsetof(xc_domaininfo_t, cpupool) == 92, "xen_domctl_getdomaininfo.cpupool");
_Static_assert(offsetof(xc_dominfo_t, nr_pages) == 16, "xc_dominfo_t.nr_pages");
_Static_assert(offsetof(xc_dominfo_t, handle) == 80, "xc_dominfo_t.handle");

#define EXPORT __attribute__((visibility("default")))
#define HANDLE_MAGIC 0x53584354u /* "SXCT" */
#define DOMAIN_REC_SIZE 40       /* domid u32, flags u32, name[32] */
#define SIM_PAGES 0x40000ul      /* 1 GiB of "memory" reported per domain */

struct xc_interface_core {
    uint32_t magic;
    struct simhv hv;
    xc_error last_error;
};

static int valid(xc_interface *xch)
{
    if (!xch || xch->magic != HANDLE_MAGIC) {
        errno = EBADF;
        return 0;
    }
    return 1;
}

static void set_error(xc_interface *xch, enum xc_error_code code, const char *msg)
{
    xch->last_error.code = code;
    snprintf(xch->last_error.message, sizeof(xch->last_error.message), "%s", msg);
}

EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger,
                                       xentoollog_logger *dombuild_logger,
                                       unsigned open_flags)
{
    xc_interface *xch = calloc(1, sizeof(*xch));
    (void)logger;
    (void)dombuild_logger;
    (void)open_flags;
    if (!xch) {
        errno = ENOMEM;
        return NULL;
    }
    if (simhv_open(&xch->hv) < 0) {
        int e = errno;
        free(xch);
        errno = e;
        return NULL;
    }
    xch->magic = HANDLE_MAGIC;
    return xch;
}

EXPORT int xc_interface_close(xc_interface *xch)
{
    if (!xch)
        return 0;
    if (!valid(xch))
        return -1;
    xch->magic = 0;
    simhv_close(&xch->hv);
    free(xch);
    return 0;
}

/* The sim's domains with domid >= first (at most max): malloc'd records, count in *n. */
static uint8_t *list_domains(xc_interface *xch, uint32_t first, unsigned int max,
                             unsigned int *n)
{
    struct simhv_reply rep;
    uint8_t *out;
    unsigned int k = 0;

    *n = 0;
    if (simhv_call_ok(&xch->hv, SIMHV_CTL_LIST_DOMAINS, NULL, 0, NULL, 0, 1, &rep) < 0) {
        set_error(xch, XC_INTERNAL_ERROR, "listing the sim's domains failed");
        return NULL;
    }
    out = malloc(rep.len ? rep.len : 1);
    if (!out) {
        simhv_reply_free(&rep);
        errno = ENOMEM;
        return NULL;
    }
    for (size_t off = 0; off + DOMAIN_REC_SIZE <= rep.len && k < max;
         off += DOMAIN_REC_SIZE) {
        if (simhv_get32(rep.data + off) < first)
            continue; /* records come sorted by domid */
        memcpy(out + (size_t)k * DOMAIN_REC_SIZE, rep.data + off, DOMAIN_REC_SIZE);
        k++;
    }
    simhv_reply_free(&rep);
    *n = k;
    return out;
}

static void fake_handle(uint8_t handle[16], uint32_t domid)
{
    memset(handle, 0, 16);
    if (domid) { /* a stable made-up UUID per domain; domain 0's is all zeros, as on Xen */
        memcpy(handle, "sndif-sim-dom", 12);
        handle[12] = (uint8_t)(domid >> 24);
        handle[13] = (uint8_t)(domid >> 16);
        handle[14] = (uint8_t)(domid >> 8);
        handle[15] = (uint8_t)domid;
    }
}

EXPORT int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,
                                 unsigned int max_domains, xc_domaininfo_t *info)
{
    unsigned int n;
    uint8_t *recs;

    if (!valid(xch))
        return -1;
    if (max_domains && !info) {
        errno = EFAULT;
        return -1;
    }
    recs = list_domains(xch, first_domain, max_domains, &n);
    if (!recs)
        return -1;
    for (unsigned int i = 0; i < n; i++) {
        xc_domaininfo_t *d = &info[i];
        uint32_t domid = simhv_get32(recs + (size_t)i * DOMAIN_REC_SIZE);
        memset(d, 0, sizeof(*d));
        d->domain = (uint16_t)domid;
        d->flags = XEN_DOMINF_running;
        d->tot_pages = SIM_PAGES;
        d->max_pages = SIM_PAGES;
        d->nr_online_vcpus = 1;
        d->max_vcpu_id = 0;
        fake_handle(d->handle, domid);
    }
    free(recs);
    return (int)n;
}

EXPORT int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms,
                             xc_dominfo_t *info)
{
    unsigned int n;
    uint8_t *recs;

    if (!valid(xch))
        return -1;
    if (max_doms && !info) {
        errno = EFAULT;
        return -1;
    }
    recs = list_domains(xch, first_domid, max_doms, &n);
    if (!recs)
        return -1;
    for (unsigned int i = 0; i < n; i++) {
        xc_dominfo_t *d = &info[i];
        uint32_t domid = simhv_get32(recs + (size_t)i * DOMAIN_REC_SIZE);
        memset(d, 0, sizeof(*d));
        d->domid = domid;
        d->running = 1;
        d->nr_pages = SIM_PAGES;
        d->max_memkb = SIM_PAGES * 4;
        d->nr_online_vcpus = 1;
        fake_handle(d->handle, domid);
    }
    free(recs);
    return (int)n;
}

EXPORT int xc_version(xc_interface *xch, int cmd, void *arg)
{
    if (!valid(xch))
        return -1;
    switch (cmd) {
    case XENVER_version:
        return (4 << 16) | 17;
    case XENVER_extraversion:
        if (!arg) {
            errno = EFAULT;
            return -1;
        }
        memset(arg, 0, 16);
        memcpy(arg, ".0-sim", 6);
        return 0;
    case XENVER_pagesize:
        return SIMHV_PAGE_SIZE;
    default:
        errno = ENOSYS;
        return -1;
    }
}

EXPORT const xc_error *xc_get_last_error(xc_interface *handle)
{
    static const xc_error none = { XC_ERROR_NONE, "" };
    if (!valid(handle))
        return &none;
    return &handle->last_error;
}

EXPORT void xc_clear_last_error(xc_interface *xch)
{
    if (valid(xch))
        set_error(xch, XC_ERROR_NONE, "");
}

EXPORT const char *xc_error_code_to_desc(int code)
{
    switch (code) {
    case XC_ERROR_NONE: return "No error details";
    case XC_INTERNAL_ERROR: return "Internal error";
    case XC_INVALID_KERNEL: return "Invalid kernel";
    case XC_INVALID_PARAM: return "Invalid configuration";
    case XC_OUT_OF_MEMORY: return "Out of memory";
    default: return "Unknown error code";
    }
}

EXPORT const char *xc_strerror(xc_interface *xch, int errcode)
{
    (void)xch;
    return strerror(errcode);
}

/* ---------------------------------------------------------------- compat API */

EXPORT xc_evtchn *xc_evtchn_open(xentoollog_logger *logger, unsigned open_flags)
{
    return xenevtchn_open(logger, open_flags);
}
EXPORT int xc_evtchn_close(xc_evtchn *xce) { return xenevtchn_close(xce); }
EXPORT int xc_evtchn_fd(xc_evtchn *xce) { return xenevtchn_fd(xce); }
EXPORT int xc_evtchn_notify(xc_evtchn *xce, evtchn_port_t port)
{
    return xenevtchn_notify(xce, port);
}
EXPORT xc_evtchn_port_or_error_t xc_evtchn_bind_unbound_port(xc_evtchn *xce, uint32_t domid)
{
    return xenevtchn_bind_unbound_port(xce, domid);
}
EXPORT xc_evtchn_port_or_error_t xc_evtchn_bind_interdomain(xc_evtchn *xce, uint32_t domid,
                                                            evtchn_port_t remote_port)
{
    return xenevtchn_bind_interdomain(xce, domid, remote_port);
}
EXPORT xc_evtchn_port_or_error_t xc_evtchn_bind_virq(xc_evtchn *xce, unsigned int virq)
{
    return xenevtchn_bind_virq(xce, virq);
}
EXPORT int xc_evtchn_unbind(xc_evtchn *xce, evtchn_port_t port)
{
    return xenevtchn_unbind(xce, port);
}
EXPORT xc_evtchn_port_or_error_t xc_evtchn_pending(xc_evtchn *xce)
{
    return xenevtchn_pending(xce);
}
EXPORT int xc_evtchn_unmask(xc_evtchn *xce, evtchn_port_t port)
{
    return xenevtchn_unmask(xce, port);
}

EXPORT xc_gnttab *xc_gnttab_open(xentoollog_logger *logger, unsigned open_flags)
{
    return xengnttab_open(logger, open_flags);
}
EXPORT int xc_gnttab_close(xc_gnttab *xcg) { return xengnttab_close(xcg); }
EXPORT void *xc_gnttab_map_grant_ref(xc_gnttab *xcg, uint32_t domid, uint32_t ref, int prot)
{
    return xengnttab_map_grant_ref(xcg, domid, ref, prot);
}
EXPORT void *xc_gnttab_map_grant_refs(xc_gnttab *xcg, uint32_t count, uint32_t *domids,
                                      uint32_t *refs, int prot)
{
    return xengnttab_map_grant_refs(xcg, count, domids, refs, prot);
}
EXPORT void *xc_gnttab_map_domain_grant_refs(xc_gnttab *xcg, uint32_t count, uint32_t domid,
                                             uint32_t *refs, int prot)
{
    return xengnttab_map_domain_grant_refs(xcg, count, domid, refs, prot);
}
EXPORT void *xc_gnttab_map_grant_ref_notify(xc_gnttab *xcg, uint32_t domid, uint32_t ref,
                                            int prot, uint32_t notify_offset,
                                            evtchn_port_t notify_port)
{
    return xengnttab_map_grant_ref_notify(xcg, domid, ref, prot, notify_offset, notify_port);
}
EXPORT int xc_gnttab_munmap(xc_gnttab *xcg, void *start_address, uint32_t count)
{
    return xengnttab_unmap(xcg, start_address, count);
}
EXPORT int xc_gnttab_set_max_grants(xc_gnttab *xcg, uint32_t count)
{
    return xengnttab_set_max_grants(xcg, count);
}

EXPORT xc_gntshr *xc_gntshr_open(xentoollog_logger *logger, unsigned open_flags)
{
    return xengntshr_open(logger, open_flags);
}
EXPORT int xc_gntshr_close(xc_gntshr *xcg) { return xengntshr_close(xcg); }
EXPORT void *xc_gntshr_share_pages(xc_gntshr *xcg, uint32_t domid, int count, uint32_t *refs,
                                   int writable)
{
    return xengntshr_share_pages(xcg, domid, count, refs, writable);
}
EXPORT void *xc_gntshr_share_page_notify(xc_gntshr *xcg, uint32_t domid, uint32_t *ref,
                                         int writable, uint32_t notify_offset,
                                         evtchn_port_t notify_port)
{
    return xengntshr_share_page_notify(xcg, domid, ref, writable, notify_offset, notify_port);
}
EXPORT int xc_gntshr_munmap(xc_gntshr *xcg, void *start_address, uint32_t count)
{
    return xengntshr_unshare(xcg, start_address, count);
}
