/*
 * Prints what Xen's io/sndif.h says about layouts and constants, one fact per line, for
 * tests/test_header_crosscheck.py to compare with the Python models:
 *
 *   size   STRUCT SIZEOF
 *   off    STRUCT FIELD.PATH OFFSET SIZE
 *   const  NAME VALUE
 *   str    NAME VALUE
 *   hex    NAME BYTES-IN-HEX        (structs filled with known values, see fill_*)
 *
 * Build: gcc -std=gnu11 -Wall -Werror sndif_layout.c (needs libxen-dev).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <xen/io/sndif.h>

#define SIZE(T) printf("size %s %zu\n", #T, sizeof(struct T))
#define OFF(T, F) \
    printf("off %s %s %zu %zu\n", #T, #F, offsetof(struct T, F), sizeof(((struct T *)0)->F))
#define CONST(N) printf("const %s %lld\n", #N, (long long)(N))
#define STR(N) printf("str %s %s\n", #N, N)

static void hex(const char *name, const void *p, size_t n)
{
    const unsigned char *b = p;
    printf("hex %s ", name);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

/* Reserved bytes get a recognisable non-zero pattern so that their position is checked. */
static void fill_reserved(uint8_t *r, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        r[i] = (uint8_t)(seed + i);
}

static void layouts(void)
{
    SIZE(xensnd_req);
    OFF(xensnd_req, id);
    OFF(xensnd_req, operation);
    OFF(xensnd_req, reserved);
    OFF(xensnd_req, op);
    OFF(xensnd_req, op.reserved);
    OFF(xensnd_req, op.open.pcm_rate);
    OFF(xensnd_req, op.open.pcm_format);
    OFF(xensnd_req, op.open.pcm_channels);
    OFF(xensnd_req, op.open.reserved);
    OFF(xensnd_req, op.open.buffer_sz);
    OFF(xensnd_req, op.open.gref_directory);
    OFF(xensnd_req, op.open.period_sz);
    OFF(xensnd_req, op.rw.offset);
    OFF(xensnd_req, op.rw.length);
    OFF(xensnd_req, op.trigger.type);
    OFF(xensnd_req, op.hw_param.formats);
    OFF(xensnd_req, op.hw_param.rates.min);
    OFF(xensnd_req, op.hw_param.rates.max);
    OFF(xensnd_req, op.hw_param.channels.min);
    OFF(xensnd_req, op.hw_param.channels.max);
    OFF(xensnd_req, op.hw_param.buffer.min);
    OFF(xensnd_req, op.hw_param.buffer.max);
    OFF(xensnd_req, op.hw_param.period.min);
    OFF(xensnd_req, op.hw_param.period.max);

    SIZE(xensnd_open_req);
    SIZE(xensnd_rw_req);
    SIZE(xensnd_trigger_req);
    SIZE(xensnd_query_hw_param);
    SIZE(xensnd_cur_pos_evt);

    SIZE(xensnd_resp);
    OFF(xensnd_resp, id);
    OFF(xensnd_resp, operation);
    OFF(xensnd_resp, reserved);
    OFF(xensnd_resp, status);
    OFF(xensnd_resp, resp);
    OFF(xensnd_resp, resp.reserved1);
    OFF(xensnd_resp, resp.hw_param.formats);
    OFF(xensnd_resp, resp.hw_param.rates.min);
    OFF(xensnd_resp, resp.hw_param.rates.max);
    OFF(xensnd_resp, resp.hw_param.channels.min);
    OFF(xensnd_resp, resp.hw_param.channels.max);
    OFF(xensnd_resp, resp.hw_param.buffer.min);
    OFF(xensnd_resp, resp.hw_param.buffer.max);
    OFF(xensnd_resp, resp.hw_param.period.min);
    OFF(xensnd_resp, resp.hw_param.period.max);

    SIZE(xensnd_evt);
    OFF(xensnd_evt, id);
    OFF(xensnd_evt, type);
    OFF(xensnd_evt, reserved);
    OFF(xensnd_evt, op);
    OFF(xensnd_evt, op.reserved);
    OFF(xensnd_evt, op.cur_pos.position);

    SIZE(xensnd_event_page);
    OFF(xensnd_event_page, in_cons);
    OFF(xensnd_event_page, in_prod);
    OFF(xensnd_event_page, reserved);

    OFF(xensnd_page_directory, gref_dir_next_page);
    OFF(xensnd_page_directory, gref);
    OFF(xensnd_page_directory, gref[1]);

    OFF(xen_sndif_sring, req_prod);
    OFF(xen_sndif_sring, req_event);
    OFF(xen_sndif_sring, rsp_prod);
    OFF(xen_sndif_sring, rsp_event);
    OFF(xen_sndif_sring, pvt);
    OFF(xen_sndif_sring, __pad);
    OFF(xen_sndif_sring, ring);
    OFF(xen_sndif_sring, ring[1]);
    printf("size xen_sndif_sring_entry %zu\n", sizeof(union xen_sndif_sring_entry));
}

static void constants(void)
{
    CONST(XENSND_PROTOCOL_VERSION);
    CONST(XENSND_SAMPLE_RATE_MAX_LEN);
    CONST(XENSND_SAMPLE_FORMAT_MAX_LEN);
    CONST(XENSND_EVENT_PAGE_SIZE);
    CONST(XENSND_IN_RING_OFFS);
    CONST(XENSND_IN_RING_SIZE);
    CONST(XENSND_IN_RING_LEN);
    printf("const RING_SIZE_4096 %u\n", (unsigned)__CONST_RING_SIZE(xen_sndif, 4096));
    printf("const PAGE_DIR_GREFS_4096 %zu\n",
           (4096 - offsetof(struct xensnd_page_directory, gref)) / sizeof(grant_ref_t));

    CONST(XENSND_OP_OPEN);
    CONST(XENSND_OP_CLOSE);
    CONST(XENSND_OP_READ);
    CONST(XENSND_OP_WRITE);
    CONST(XENSND_OP_SET_VOLUME);
    CONST(XENSND_OP_GET_VOLUME);
    CONST(XENSND_OP_MUTE);
    CONST(XENSND_OP_UNMUTE);
    CONST(XENSND_OP_TRIGGER);
    CONST(XENSND_OP_HW_PARAM_QUERY);
    CONST(XENSND_OP_TRIGGER_START);
    CONST(XENSND_OP_TRIGGER_PAUSE);
    CONST(XENSND_OP_TRIGGER_STOP);
    CONST(XENSND_OP_TRIGGER_RESUME);
    CONST(XENSND_EVT_CUR_POS);

#define FMT(N) do { CONST(XENSND_PCM_FORMAT_##N); STR(XENSND_PCM_FORMAT_##N##_STR); } while (0)
    FMT(S8); FMT(U8); FMT(S16_LE); FMT(S16_BE); FMT(U16_LE); FMT(U16_BE);
    FMT(S24_LE); FMT(S24_BE); FMT(U24_LE); FMT(U24_BE); FMT(S32_LE); FMT(S32_BE);
    FMT(U32_LE); FMT(U32_BE); FMT(F32_LE); FMT(F32_BE); FMT(F64_LE); FMT(F64_BE);
    FMT(IEC958_SUBFRAME_LE); FMT(IEC958_SUBFRAME_BE); FMT(MU_LAW); FMT(A_LAW);
    FMT(IMA_ADPCM); FMT(MPEG); FMT(GSM);

    STR(XENSND_DRIVER_NAME);
    STR(XENSND_LIST_SEPARATOR);
    STR(XENSND_STREAM_TYPE_PLAYBACK);
    STR(XENSND_STREAM_TYPE_CAPTURE);
    STR(XENSND_FIELD_BE_VERSIONS);
    STR(XENSND_FIELD_FE_VERSION);
    STR(XENSND_FIELD_VCARD_SHORT_NAME);
    STR(XENSND_FIELD_VCARD_LONG_NAME);
    STR(XENSND_FIELD_RING_REF);
    STR(XENSND_FIELD_EVT_CHNL);
    STR(XENSND_FIELD_EVT_RING_REF);
    STR(XENSND_FIELD_EVT_EVT_CHNL);
    STR(XENSND_FIELD_DEVICE_NAME);
    STR(XENSND_FIELD_TYPE);
    STR(XENSND_FIELD_STREAM_UNIQUE_ID);
    STR(XENSND_FIELD_CHANNELS_MIN);
    STR(XENSND_FIELD_CHANNELS_MAX);
    STR(XENSND_FIELD_SAMPLE_RATES);
    STR(XENSND_FIELD_SAMPLE_FORMATS);
    STR(XENSND_FIELD_BUFFER_SIZE);
}

/* The values here are mirrored in test_header_crosscheck.py (KNOWN_STRUCTS). */
static void fill_hw(struct xensnd_query_hw_param *h)
{
    h->formats = 0x0123456789abcdefULL;
    h->rates.min = 8000;
    h->rates.max = 192000;
    h->channels.min = 1;
    h->channels.max = 8;
    h->buffer.min = 64;
    h->buffer.max = 0x80000;
    h->period.min = 32;
    h->period.max = 0x40000;
}

static void known_structs(void)
{
    struct xensnd_req req;
    struct xensnd_resp resp;
    struct xensnd_evt evt;
    struct xensnd_event_page ep;
    static union {
        struct xen_sndif_sring s;
        uint8_t page[4096];
    } ring;
    static union {
        struct xensnd_page_directory d;
        uint8_t page[4096];
    } dir;

    memset(&req, 0, sizeof(req));
    req.id = 0xbeef;
    req.operation = XENSND_OP_OPEN;
    fill_reserved(req.reserved, sizeof(req.reserved), 0xa0);
    req.op.open.pcm_rate = 48000;
    req.op.open.pcm_format = XENSND_PCM_FORMAT_S16_LE;
    req.op.open.pcm_channels = 2;
    req.op.open.reserved = 0x1234;
    req.op.open.buffer_sz = 65536;
    req.op.open.gref_directory = 0xdeadbeef;
    req.op.open.period_sz = 4096;
    fill_reserved(req.op.reserved + sizeof(req.op.open),
                  sizeof(req.op.reserved) - sizeof(req.op.open), 0x40);
    hex("open_req", &req, sizeof(req));

    memset(&req, 0, sizeof(req));
    req.id = 1;
    req.operation = XENSND_OP_CLOSE;
    fill_reserved(req.op.reserved, sizeof(req.op.reserved), 0x10);
    hex("close_req", &req, sizeof(req));

    memset(&req, 0, sizeof(req));
    req.id = 2;
    req.operation = XENSND_OP_WRITE;
    req.op.rw.offset = 0x1000;
    req.op.rw.length = 0x2345;
    hex("write_req", &req, sizeof(req));

    memset(&req, 0, sizeof(req));
    req.id = 3;
    req.operation = XENSND_OP_SET_VOLUME;
    req.op.rw.offset = 8;
    req.op.rw.length = 16;
    hex("set_volume_req", &req, sizeof(req));

    memset(&req, 0, sizeof(req));
    req.id = 4;
    req.operation = XENSND_OP_TRIGGER;
    req.op.trigger.type = XENSND_OP_TRIGGER_RESUME;
    hex("trigger_req", &req, sizeof(req));

    memset(&req, 0, sizeof(req));
    req.id = 5;
    req.operation = XENSND_OP_HW_PARAM_QUERY;
    fill_hw(&req.op.hw_param);
    hex("hw_param_query_req", &req, sizeof(req));

    memset(&resp, 0, sizeof(resp));
    resp.id = 0xbeef;
    resp.operation = XENSND_OP_OPEN;
    resp.reserved = 0x77;
    resp.status = -22;
    hex("resp", &resp, sizeof(resp));

    memset(&resp, 0, sizeof(resp));
    resp.id = 5;
    resp.operation = XENSND_OP_HW_PARAM_QUERY;
    resp.status = 0;
    fill_hw(&resp.resp.hw_param);
    hex("hw_param_resp", &resp, sizeof(resp));

    memset(&evt, 0, sizeof(evt));
    evt.id = 0x4242;
    evt.type = XENSND_EVT_CUR_POS;
    fill_reserved(evt.reserved, sizeof(evt.reserved), 0xe0);
    evt.op.cur_pos.position = 0x0102030405060708ULL;
    hex("cur_pos_evt", &evt, sizeof(evt));

    memset(&ep, 0, sizeof(ep));
    ep.in_cons = 0xfffffffe;
    ep.in_prod = 0x11;
    hex("event_page_header", &ep, sizeof(ep));

    memset(&ring, 0xff, sizeof(ring));
    SHARED_RING_INIT(&ring.s);
    ring.s.req_prod = 7;
    ring.s.rsp_prod = 6;
    hex("ring_header", ring.page, offsetof(struct xen_sndif_sring, ring));

    memset(&dir, 0, sizeof(dir));
    dir.d.gref_dir_next_page = 0x99;
    for (unsigned i = 0; i < 3; i++)
        dir.d.gref[i] = 100 + i;
    dir.d.gref[(4096 - offsetof(struct xensnd_page_directory, gref)) / sizeof(grant_ref_t) - 1]
        = 0xabcdef;
    hex("page_directory", dir.page, sizeof(dir.page));
}

int main(void)
{
    layouts();
    constants();
    known_structs();
    return 0;
}
