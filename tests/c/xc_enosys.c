/*
 * xc_enosys: a toolstack-ish program linked the ordinary way against Debian's libxenctrl.
 * On the simulated Xen it opens xc, lists the domains (simulated), asks for the version
 * (simulated), then calls functions the sim does not simulate: each must answer -1/ENOSYS
 * (or NULL/ENOSYS), and nothing may crash. Prints one line per check; exit 0 when all hold.
 *
 *   xc_enosys EXPECTED_NDOMAINS
 */
#define XC_WANT_COMPAT_MAP_FOREIGN_API 1
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xenctrl.h>

static int failures;

static void check(int ok, const char *what)
{
    printf("%s %s (errno %d)\n", ok ? "ok  " : "FAIL", what, errno);
    if (!ok)
        failures++;
}

#define ENOSYS_INT(call)                                   \
    do {                                                   \
        errno = 0;                                         \
        int r_ = (call);                                   \
        check(r_ == -1 && errno == ENOSYS, #call);         \
    } while (0)

#define ENOSYS_PTR(call)                                   \
    do {                                                   \
        errno = 0;                                         \
        void *p_ = (void *)(call);                         \
        check(p_ == NULL && errno == ENOSYS, #call);       \
    } while (0)

int main(int argc, char **argv)
{
    xc_interface *xch;
    xc_domaininfo_t info[16];
    xc_dominfo_t old[16];
    xc_physinfo_t phys;
    xen_extraversion_t extra;
    int expected = argc > 1 ? atoi(argv[1]) : 2, n, v;
    xen_pfn_t pfn = 0;

    xch = xc_interface_open(NULL, NULL, 0);
    check(xch != NULL, "xc_interface_open");
    if (!xch)
        return 1;

    n = xc_domain_getinfolist(xch, 0, 16, info);
    check(n == expected, "xc_domain_getinfolist counts the sim's domains");
    check(n >= 1 && info[0].domain == 0 && (info[0].flags & XEN_DOMINF_running),
          "domain 0 listed first, running");
    n = xc_domain_getinfolist(xch, 1, 16, info);
    check(n == expected - 1 && (n == 0 || info[0].domain >= 1), "first_domain honoured");
    n = xc_domain_getinfo(xch, 0, 16, old);
    check(n == expected && old[0].domid == 0 && old[0].running, "xc_domain_getinfo");

    v = xc_version(xch, XENVER_version, NULL);
    check(v == ((4 << 16) | 17), "xc_version is 4.17");
    check(xc_version(xch, XENVER_extraversion, &extra) == 0, "xc_version extraversion");
    check(strcmp(xc_error_code_to_desc(XC_INTERNAL_ERROR), "Internal error") == 0,
          "xc_error_code_to_desc");
    check(xc_get_last_error(xch) != NULL, "xc_get_last_error");
    xc_clear_last_error(xch);

    ENOSYS_INT(xc_domain_pause(xch, 1));
    ENOSYS_INT(xc_domain_unpause(xch, 1));
    ENOSYS_INT(xc_physinfo(xch, &phys));
    ENOSYS_INT(xc_domain_setmaxmem(xch, 1, 1024));
    ENOSYS_INT(xc_evtchn_alloc_unbound(xch, 0, 1));
    ENOSYS_INT(xc_domain_destroy(xch, 1));
    ENOSYS_INT(xc_get_max_cpus(xch));
    ENOSYS_PTR(xc_map_foreign_range(xch, 1, 4096, PROT_READ, 0));
    ENOSYS_PTR(xc_map_foreign_pages(xch, 1, PROT_READ, &pfn, 1));
    ENOSYS_PTR(xc_cpumap_alloc(xch));
    ENOSYS_PTR(xc_interface_fmem_handle(xch));

    check(xc_interface_close(xch) == 0, "xc_interface_close");
    check(xc_interface_close(NULL) == 0, "xc_interface_close(NULL)");
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
