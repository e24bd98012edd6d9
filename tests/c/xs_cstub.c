/*
 * xs_cstub: an LD_PRELOAD stub of the few libxenctrl / libxenevtchn / libxengnttab calls
 * Debian's C xenstored 4.17 makes, so it runs without a hypervisor as the oracle of
 * tests/test_xenstored_differential.py.
 *
 * A guest's ring page (XS_INTRODUCE, then xengnttab_map_grant_ref of the reserved
 * xenstore grant) is the file $XS_STUB_DIR/ring-<domid>, which the test maps too. The
 * event channel is the FIFO $XS_STUB_DIR/kick: the test writes a byte to wake xenstored's
 * poll() after it put a request on a ring (xenstored looks at every ring on each turn of
 * its loop); notifications from xenstored are dropped (the test polls the ring).
 *
 * dom0_init reads the xenbus port from /proc/xen/xsd_port and maps /proc/xen/xsd_kva (dom0
 * must exist: without it, -D, xenstored crashes on a socket request): those two opens are
 * redirected to $XS_STUB_DIR/xsd_port and $XS_STUB_DIR/ring-0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define VIRQ_PORT 1000
#define DOM_PORT 2000

static int dummy;
static int kick_fd = -1;

static const char *dir(void)
{
    const char *d = getenv("XS_STUB_DIR");
    return d ? d : ".";
}

EXPORT void *xc_interface_open(void *logger, void *dombuild_logger, unsigned open_flags)
{
    (void)logger, (void)dombuild_logger, (void)open_flags;
    return &dummy;
}

EXPORT int xc_interface_close(void *xch)
{
    (void)xch;
    return 0;
}

/* Every asked-for domain exists and is running: xc_dominfo_t starts with uint32_t domid,
 * uint32_t ssidref, then the flag bits (dying, crashed, shutdown, ...) all zero. */
EXPORT int xc_domain_getinfo(void *xch, uint32_t first_domid, unsigned int max_doms,
                             void *info)
{
    (void)xch;
    if (max_doms < 1)
        return 0;
    memset(info, 0, 64);
    memcpy(info, &first_domid, 4);
    return 1;
}

EXPORT void *xengnttab_open(void *logger, unsigned open_flags)
{
    (void)logger, (void)open_flags;
    return &dummy;
}

EXPORT int xengnttab_close(void *h)
{
    (void)h;
    return 0;
}

EXPORT int xengnttab_set_max_grants(void *h, uint32_t n)
{
    (void)h, (void)n;
    return 0;
}

EXPORT void *xengnttab_map_grant_ref(void *h, uint32_t domid, uint32_t ref, int prot)
{
    char path[4096];
    void *p;
    int fd;
    (void)h, (void)ref;
    snprintf(path, sizeof(path), "%s/ring-%u", dir(), domid);
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    p = mmap(NULL, 4096, prot, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

EXPORT int xengnttab_unmap(void *h, void *start, uint32_t count)
{
    (void)h;
    return munmap(start, (size_t)count * 4096);
}

EXPORT void *xenevtchn_open(void *logger, unsigned open_flags)
{
    char path[4096];
    (void)logger, (void)open_flags;
    if (kick_fd < 0) {
        snprintf(path, sizeof(path), "%s/kick", dir());
        kick_fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (kick_fd < 0)
            return NULL;
    }
    return &dummy;
}

EXPORT void *xenevtchn_fdopen(void *logger, int fd, unsigned open_flags)
{
    (void)fd;
    return xenevtchn_open(logger, open_flags);
}

EXPORT int xenevtchn_fd(void *h)
{
    (void)h;
    return kick_fd;
}

EXPORT int xenevtchn_bind_virq(void *h, unsigned int virq)
{
    (void)h, (void)virq;
    return VIRQ_PORT;
}

EXPORT int xenevtchn_bind_interdomain(void *h, uint32_t domid, uint32_t remote_port)
{
    (void)h, (void)remote_port;
    return (int)(DOM_PORT + domid);
}

EXPORT int xenevtchn_pending(void *h)
{
    char buf[64];
    (void)h;
    while (read(kick_fd, buf, sizeof(buf)) > 0)
        ;
    return DOM_PORT; /* not the VIRQ: no domain_cleanup; the rings are looked at anyway */
}

EXPORT int xenevtchn_unmask(void *h, uint32_t port)
{
    (void)h, (void)port;
    return 0;
}

EXPORT int xenevtchn_notify(void *h, uint32_t port)
{
    (void)h, (void)port;
    return 0;
}

EXPORT int xenevtchn_unbind(void *h, uint32_t port)
{
    (void)h, (void)port;
    return 0;
}

static int redirect(const char *path, char *out, size_t len)
{
    if (!path)
        return 0;
    if (strcmp(path, "/proc/xen/xsd_port") == 0)
        snprintf(out, len, "%s/xsd_port", dir());
    else if (strcmp(path, "/proc/xen/xsd_kva") == 0)
        snprintf(out, len, "%s/ring-0", dir());
    else
        return 0;
    return 1;
}

typedef int (*open_fn)(const char *, int, ...);

static int do_open(const char *name, const char *path, int flags, va_list ap)
{
    char buf[4096];
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
    open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
    if (redirect(path, buf, sizeof(buf)))
        path = buf;
    return real(path, flags, mode);
}

EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    int r;
    va_start(ap, flags);
    r = do_open("open", path, flags, ap);
    va_end(ap);
    return r;
}

EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    int r;
    va_start(ap, flags);
    r = do_open("open64", path, flags, ap);
    va_end(ap);
    return r;
}
