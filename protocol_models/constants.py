"""Constants of the sndif protocol, mirroring the names of Xen's ``io/sndif.h``.

Everything numeric about the protocol lives here once; models, codecs, the frontend, the
backend and the reports derive from it (clauses.md section 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

XEN_PAGE_SIZE = 4096
XENSND_PROTOCOL_VERSION = 2
XENSND_DRIVER_NAME = "vsnd"
XENSND_LIST_SEPARATOR = ","
XENSND_SAMPLE_RATE_MAX_LEN = 11
XENSND_SAMPLE_FORMAT_MAX_LEN = 24

#: Size of every request, response and event (sndif.h v2: "packets are 64 octets").
XENSND_MSG_SIZE = 64
#: Request-ring slots in one page: __RD32((4096 - 64) / 64).
XENSND_RING_SIZE = 32
#: Event page layout (XENSND_IN_RING_OFFS / _SIZE / _LEN).
XENSND_IN_RING_OFFS = 64
XENSND_IN_RING_SIZE = XEN_PAGE_SIZE - XENSND_IN_RING_OFFS
XENSND_IN_RING_LEN = XENSND_IN_RING_SIZE // XENSND_MSG_SIZE
#: Grant refs per page-directory page: (4096 - 4) / 4.
XENSND_PAGE_DIR_GREFS = (XEN_PAGE_SIZE - 4) // 4

#: Linux frontend request timeout, VSND_WAIT_BACK_MS.
VSND_WAIT_BACK_MS = 3000
#: libxl waits for the backend after device add and on removal (LIBXL_*_TIMEOUT).
LIBXL_INIT_TIMEOUT_S = 10
LIBXL_DESTROY_TIMEOUT_S = 10


class Op(enum.IntEnum):
    """XENSND_OP_*."""

    OPEN = 0
    CLOSE = 1
    READ = 2
    WRITE = 3
    SET_VOLUME = 4
    GET_VOLUME = 5
    MUTE = 6
    UNMUTE = 7
    TRIGGER = 8
    HW_PARAM_QUERY = 9


class Trigger(enum.IntEnum):
    """XENSND_OP_TRIGGER_*."""

    START = 0
    PAUSE = 1
    STOP = 2
    RESUME = 3


class Evt(enum.IntEnum):
    """XENSND_EVT_*."""

    CUR_POS = 0


class PcmFormat(enum.IntEnum):
    """XENSND_PCM_FORMAT_*; the HW_PARAM_QUERY mask bit is ``1 << value``."""

    S8 = 0
    U8 = 1
    S16_LE = 2
    S16_BE = 3
    U16_LE = 4
    U16_BE = 5
    S24_LE = 6
    S24_BE = 7
    U24_LE = 8
    U24_BE = 9
    S32_LE = 10
    S32_BE = 11
    U32_LE = 12
    U32_BE = 13
    F32_LE = 14
    F32_BE = 15
    F64_LE = 16
    F64_BE = 17
    IEC958_SUBFRAME_LE = 18
    IEC958_SUBFRAME_BE = 19
    MU_LAW = 20
    A_LAW = 21
    IMA_ADPCM = 22
    MPEG = 23
    GSM = 24

    @property
    def xs_name(self) -> str:
        """The XenStore string of sndif.h (``XENSND_PCM_FORMAT_*_STR``)."""
        return PCM_FORMATS[self].xs_name

    @property
    def mask(self) -> int:
        return 1 << int(self)


@dataclass(frozen=True)
class PcmFormatInfo:
    """What a format's samples look like. ``width`` is the container size in octets (ALSA's
    physical width: S24/U24 use 4), or None where the format has no fixed sample size."""

    fmt: PcmFormat
    xs_name: str
    width: int | None
    signed: bool | None
    endian: str | None  # "little", "big" or None for single octets / compressed data
    kind: str  # "int", "float", "iec958", "companded", "compressed"

    def frame_size(self, channels: int) -> int:
        """Octets per frame for ``channels`` channels."""
        if self.width is None:
            raise ValueError(f"{self.fmt.name} has no fixed frame size")
        if channels < 1:
            raise ValueError(f"channels must be at least 1, not {channels}")
        return self.width * channels


def _table() -> dict[PcmFormat, PcmFormatInfo]:
    rows: list[tuple[str, int | None, bool | None, str | None, str]] = [
        ("s8", 1, True, None, "int"),
        ("u8", 1, False, None, "int"),
        ("s16_le", 2, True, "little", "int"),
        ("s16_be", 2, True, "big", "int"),
        ("u16_le", 2, False, "little", "int"),
        ("u16_be", 2, False, "big", "int"),
        ("s24_le", 4, True, "little", "int"),
        ("s24_be", 4, True, "big", "int"),
        ("u24_le", 4, False, "little", "int"),
        ("u24_be", 4, False, "big", "int"),
        ("s32_le", 4, True, "little", "int"),
        ("s32_be", 4, True, "big", "int"),
        ("u32_le", 4, False, "little", "int"),
        ("u32_be", 4, False, "big", "int"),
        ("float_le", 4, True, "little", "float"),
        ("float_be", 4, True, "big", "float"),
        ("float64_le", 8, True, "little", "float"),
        ("float64_be", 8, True, "big", "float"),
        ("iec958_subframe_le", 4, None, "little", "iec958"),
        ("iec958_subframe_be", 4, None, "big", "iec958"),
        ("mu_law", 1, None, None, "companded"),
        ("a_law", 1, None, None, "companded"),
        ("ima_adpcm", None, None, None, "compressed"),
        ("mpeg", None, None, None, "compressed"),
        ("gsm", None, None, None, "compressed"),
    ]
    return {
        fmt: PcmFormatInfo(fmt, *row) for fmt, row in zip(PcmFormat, rows, strict=True)
    }


PCM_FORMATS: dict[PcmFormat, PcmFormatInfo] = _table()
PCM_FORMAT_BY_XS_NAME: dict[str, PcmFormat] = {i.xs_name: f for f, i in PCM_FORMATS.items()}


def frame_size(fmt: PcmFormat | int | str, channels: int) -> int:
    """Octets per frame of ``fmt`` (enum, value, enum name or XenStore string)."""
    return PCM_FORMATS[pcm_format(fmt)].frame_size(channels)


def pcm_format(value: PcmFormat | int | str) -> PcmFormat:
    """Coerce an enum, its value, its name (``S16_LE``) or XenStore string (``s16_le``)."""
    if isinstance(value, str):
        if value in PCM_FORMAT_BY_XS_NAME:
            return PCM_FORMAT_BY_XS_NAME[value]
        try:
            return PcmFormat[value.upper()]
        except KeyError:
            raise ValueError(f"unknown PCM format {value!r}") from None
    return PcmFormat(value)


class XenErrno(enum.IntEnum):
    """Xen's errno values (xen/errno.h); a failing sndif status is ``-XenErrno.X``."""

    EPERM = 1
    ENOENT = 2
    ESRCH = 3
    EINTR = 4
    EIO = 5
    ENXIO = 6
    E2BIG = 7
    ENOEXEC = 8
    EBADF = 9
    ECHILD = 10
    EAGAIN = 11
    ENOMEM = 12
    EACCES = 13
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    EXDEV = 18
    ENODEV = 19
    ENOTDIR = 20
    EISDIR = 21
    EINVAL = 22
    ENFILE = 23
    EMFILE = 24
    ENOSPC = 28
    EROFS = 30
    EMLINK = 31
    EDOM = 33
    ERANGE = 34
    EDEADLK = 35
    ENAMETOOLONG = 36
    ENOLCK = 37
    ENOSYS = 38
    ENOTEMPTY = 39
    ENODATA = 61
    ETIME = 62
    EBADMSG = 74
    EOVERFLOW = 75
    EILSEQ = 84
    ERESTART = 85
    ENOTSOCK = 88
    EMSGSIZE = 90
    EOPNOTSUPP = 95
    EADDRINUSE = 98
    EADDRNOTAVAIL = 99
    ENOBUFS = 105
    EISCONN = 106
    ENOTCONN = 107
    ETIMEDOUT = 110
    ECONNREFUSED = 111


#: Xen-internal codes that a backend has no business returning to a guest.
XEN_INTERNAL_ERRNOS = frozenset({XenErrno.EINTR, XenErrno.ERESTART})


def status_name(status: int) -> str:
    """``0`` -> ``"OK"``, ``-22`` -> ``"-EINVAL"``; anything else shown as a number."""
    if status == 0:
        return "OK"
    if status < 0:
        try:
            return "-" + XenErrno(-status).name
        except ValueError:
            pass
    return str(status)


def status_value(name: str | int) -> int:
    """Inverse of :func:`status_name`: ``"-EINVAL"``/``"EINVAL"`` -> ``-22``; ints pass."""
    if isinstance(name, int):
        return name
    if name == "OK":
        return 0
    try:
        return -XenErrno[name.lstrip("-")]
    except KeyError:
        raise ValueError(f"unknown status {name!r}") from None


class XsField:
    """XenStore node names of sndif.h (``XENSND_FIELD_*``)."""

    BE_VERSIONS = "versions"
    FE_VERSION = "version"
    VCARD_SHORT_NAME = "short-name"
    VCARD_LONG_NAME = "long-name"
    RING_REF = "ring-ref"
    EVT_CHNL = "event-channel"
    EVT_RING_REF = "evt-ring-ref"
    EVT_EVT_CHNL = "evt-event-channel"
    DEVICE_NAME = "name"
    TYPE = "type"
    STREAM_UNIQUE_ID = "unique-id"
    CHANNELS_MIN = "channels-min"
    CHANNELS_MAX = "channels-max"
    SAMPLE_RATES = "sample-rates"
    SAMPLE_FORMATS = "sample-formats"
    BUFFER_SIZE = "buffer-size"
    STATE = "state"
    BACKEND = "backend"
    BACKEND_ID = "backend-id"
    FRONTEND = "frontend"
    FRONTEND_ID = "frontend-id"
    ONLINE = "online"


#: Stream types (XENSND_STREAM_TYPE_*).
STREAM_TYPE_PLAYBACK = "p"
STREAM_TYPE_CAPTURE = "c"

#: Linux frontend limits (VSND_MAX_STREAM, SNDRV_PCM_DEVICES without dynamic minors).
VSND_MAX_STREAM = 8
SNDRV_PCM_DEVICES = 8
#: The 12 ALSA standard rates the Linux frontend recognises in ``sample-rates``.
ALSA_STANDARD_RATES = (5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 64000, 96000,
                       176400, 192000)
