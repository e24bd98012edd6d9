/*
 * simhv: the client side of the simulated hypervisor's socket protocol
 * (harness/xen/sim/PROTOCOL.md), shared by the replacement libxenevtchn, libxengnttab and
 * libxenctrl. Internal to those libraries: nothing here is exported.
 *
 * One `simhv` is one SOCK_SEQPACKET connection to the domain's hypervisor socket, named by
 * the environment the sim sets for a domain's processes (daemon.sim_env):
 * XEN_SIM_HYPERVISOR (or SNDIF_SIM_HV), else XEN_SIM_DIR/dom<XEN_SIM_DOMID>/hypervisor.sock.
 * Calls are serialised by a mutex, so a connection
 * may be shared by threads. Every wait for the daemon has a timeout (SNDIF_SIM_TIMEOUT
 * seconds, default 10) and EINTR is retried.
 */
#ifndef SNDIF_SIMHV_H
#define SNDIF_SIMHV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define SIMHV_ENV "XEN_SIM_HYPERVISOR"
#define SIMHV_ENV_ALT "SNDIF_SIM_HV"
#define SIMHV_DIR_ENV "XEN_SIM_DIR"
#define SIMHV_DOMID_ENV "XEN_SIM_DOMID"
#define SIMHV_TIMEOUT_ENV "SNDIF_SIM_TIMEOUT"

/* operations (hvproto.py: Op) */
enum {
    SIMHV_EVTCHN_ALLOC_UNBOUND = 0x01,
    SIMHV_EVTCHN_BIND_INTERDOMAIN = 0x02,
    SIMHV_EVTCHN_UNBIND = 0x03,
    SIMHV_EVTCHN_STATUS = 0x04,
    SIMHV_EVTCHN_RESET = 0x05,
    SIMHV_EVTCHN_NOTIFY_CHECK = 0x06,
    SIMHV_GNT_ALLOC = 0x10,
    SIMHV_GNT_GRANT = 0x11,
    SIMHV_GNT_REVOKE = 0x12,
    SIMHV_GNT_FREE = 0x13,
    SIMHV_GNT_MAP = 0x14,
    SIMHV_GNT_UNMAP = 0x15,
    SIMHV_GNT_MAP_NOTIFY = 0x16,
    SIMHV_GNT_PAGE_NOTIFY = 0x17,
    SIMHV_WHOAMI = 0x20,
    SIMHV_FAULT_PAGE = 0x21,
    SIMHV_CTL_LIST_DOMAINS = 0x42,
    SIMHV_ASYNC_EVTCHN_BOUND = 0x80,
};

#define SIMHV_HEADER_SIZE 16
#define SIMHV_CHUNK_SIZE 16
#define SIMHV_MAX_MSG 65536
#define SIMHV_MAX_FDS 250
#define SIMHV_PAGE_SIZE 4096
#define SIMHV_NOTIFY_CLEAR_BYTE 0x1 /* GNT_*_NOTIFY flags (Linux's UNMAP_NOTIFY_*) */
#define SIMHV_NOTIFY_SEND_EVENT 0x2
#define SIMHV_FAULT_NOTIFY 0x1 /* fault page bit: ask EVTCHN_NOTIFY_CHECK before notify */

struct simhv;

/* Called (with the connection's lock held, from whichever thread is reading) for each
 * asynchronous message (seq 0). Takes ownership of `fds`. */
typedef void (*simhv_async_fn)(void *ctx, uint32_t op, const uint8_t *payload, size_t len,
                               int *fds, int nfds);

struct simhv {
    int fd;
    uint32_t seq;
    int timeout_ms;
    pthread_mutex_t lock;
    simhv_async_fn on_async;
    void *async_ctx;
};

/* A reply: the status (0 or -errno), the payload of all chunks concatenated (chunk headers
 * removed for chunked replies), and the fds received. Free with simhv_reply_free. */
struct simhv_reply {
    int32_t status;
    uint8_t *data;
    size_t len;
    uint32_t extra;     /* chunk `extra` field (chunked replies) */
    uint32_t nitems;    /* chunk `total` (chunked replies) */
    int *fds;
    int nfds;
};

/* Connect to the domain's hypervisor socket. 0, or -1 with errno set (ENOENT when the
 * environment names none: "not running on the sim"). */
int simhv_open(struct simhv *hv);
void simhv_close(struct simhv *hv);

/* Send a request and wait for its reply. `chunked`: the reply is a series of chunks.
 * Returns 0 when the daemon answered (inspect rep->status), -1 with errno on a transport
 * failure (ETIMEDOUT, EPIPE, EPROTO...). */
int simhv_call(struct simhv *hv, uint32_t op, const void *payload, size_t len,
               const int *fds, int nfds, int chunked, struct simhv_reply *rep);

/* simhv_call, then turn a negative status into -1/errno (rep is freed in that case). */
int simhv_call_ok(struct simhv *hv, uint32_t op, const void *payload, size_t len,
                  const int *fds, int nfds, int chunked, struct simhv_reply *rep);

void simhv_reply_free(struct simhv_reply *rep);
void simhv_close_fds(int *fds, int nfds);

/* Wait for the connection to be readable and dispatch async messages, at most `ms`
 * milliseconds (0: just drain what is there). Returns the number of messages handled, or
 * -1 with errno (EPIPE: the daemon closed the connection). */
int simhv_poll_async(struct simhv *hv, int ms);

/* little-endian helpers */
static inline uint32_t simhv_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void simhv_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* The domain's fault page, mapped read-only (NULL if the sim has none); unmap with
 * munmap(page, SIMHV_PAGE_SIZE). Its first u32 says which client-side checks are due. */
volatile uint32_t *simhv_fault_page(struct simhv *hv);

/* the domain this process is, from XEN_SIM_DOMID (default 0) */
uint32_t simhv_self_domid(void);

/* Retry a syscall expression on EINTR. */
#define SIMHV_NOINTR(expr) ({ long _r; do { _r = (long)(expr); } \
                              while (_r == -1 && errno == EINTR); _r; })

#endif
