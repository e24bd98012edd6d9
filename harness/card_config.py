"""Pure: the FE's XenStore subtree -> the sound card configuration, exactly as Linux reads
it (``xen_snd_front_cfg.c``; SND-A-05..A-08, A-23).

Input is ``{path relative to the FE dir: raw value}``, e.g. ``{"0/0/type": b"p",
"sample-rates": b"8000,48000"}``; a node "exists" when it or anything below it is present
(``xenbus_exists``). Output is a :class:`CardConfig`, or a :class:`ConfigError` carrying the
errno Linux fails the card with (the FSM turns it into ``xenbus_dev_fatal``, SND-A-21).
Both carry :class:`Note` s citing the ambiguities the reader hit, for reports.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from protocol_models.constants import (
    ALSA_STANDARD_RATES,
    PCM_FORMAT_BY_XS_NAME,
    SNDRV_PCM_DEVICES,
    STREAM_TYPE_CAPTURE,
    STREAM_TYPE_PLAYBACK,
    VSND_MAX_STREAM,
    XENSND_LIST_SEPARATOR,
    PcmFormat,
    XenErrno,
    XsField,
)

#: MAX_BUFFER_SIZE and MIN_PERIOD_SIZE of the Linux FE.
LINUX_MAX_BUFFER_SIZE = 64 * 1024
LINUX_MIN_PERIOD_SIZE = 64
#: ``struct xen_front_cfg_pcm_instance.name`` is ``char[80]`` (strscpy keeps 79 octets).
LINUX_PCM_NAME_LEN = 80
#: SNDRV_PCM_RATE_8000_48000: the knot rates of the default (besides CONTINUOUS).
_RATES_8000_48000 = frozenset(r for r in ALSA_STANDARD_RATES if 8000 <= r <= 48000)
_LIBXL_FLOAT_NAMES = {"f32_le", "f32_be", "f64_le", "f64_be"}


@dataclass(frozen=True)
class PcmHw:
    """The part of ``struct snd_pcm_hardware`` the FE derives from XenStore."""

    formats: frozenset[PcmFormat]
    rates: frozenset[int]  # knot rates (ALSA rate bits)
    rates_continuous: bool  # SNDRV_PCM_RATE_CONTINUOUS; dropped once sample-rates is read
    rate_min: int
    rate_max: int
    channels_min: int
    channels_max: int
    buffer_bytes_max: int
    period_bytes_min: int
    period_bytes_max: int
    periods_min: int
    periods_max: int

    @property
    def formats_mask(self) -> int:
        """The HW_PARAM_QUERY ``formats`` mask (``1 << XENSND_PCM_FORMAT_*``)."""
        mask = 0
        for f in self.formats:
            mask |= f.mask
        return mask

    @property
    def rate_list(self) -> tuple[int, ...]:
        return tuple(sorted(self.rates))


#: SND_DRV_PCM_HW_DEFAULT (SND-A-07): the card level starts from this.
DEFAULT_PCM_HW = PcmHw(
    formats=frozenset({PcmFormat.U8, PcmFormat.S16_LE}),
    rates=_RATES_8000_48000, rates_continuous=True, rate_min=5512, rate_max=48000,
    channels_min=1, channels_max=2, buffer_bytes_max=LINUX_MAX_BUFFER_SIZE,
    period_bytes_min=LINUX_MIN_PERIOD_SIZE, period_bytes_max=LINUX_MAX_BUFFER_SIZE,
    periods_min=2, periods_max=LINUX_MAX_BUFFER_SIZE // LINUX_MIN_PERIOD_SIZE,
)


@dataclass(frozen=True)
class Note:
    """Something a report should cite: ``clause`` is e.g. ``AMBIG-18`` or ``SND-A-23``."""

    clause: str
    path: str
    text: str

    def __str__(self) -> str:
        return f"[{self.clause}] {self.path}: {self.text}"


@dataclass(frozen=True)
class StreamConfig:
    pcm: int
    stream: int
    type: str  # "p" or "c"
    index: int  # Linux's card-wide stream counter (channel index)
    unique_id: str | None  # read for reports; Linux itself never reads it
    hw: PcmHw

    @property
    def path(self) -> str:
        """The index path ``<p>/<s>`` under the FE dir."""
        return f"{self.pcm}/{self.stream}"


@dataclass(frozen=True)
class PcmDeviceConfig:
    index: int
    name: str
    hw: PcmHw
    streams: tuple[StreamConfig, ...]


@dataclass(frozen=True)
class CardConfig:
    hw: PcmHw
    devices: tuple[PcmDeviceConfig, ...]
    notes: tuple[Note, ...] = ()
    ok: bool = field(default=True, init=False)

    @property
    def streams(self) -> tuple[StreamConfig, ...]:
        """Every stream, in channel-index order."""
        return tuple(s for d in self.devices for s in d.streams)


@dataclass(frozen=True)
class ConfigError:
    """Why Linux fails the card: ``-errno`` from ``xen_snd_front_cfg_card``."""

    errno: XenErrno
    message: str
    path: str
    notes: tuple[Note, ...] = ()
    ok: bool = field(default=False, init=False)

    def __str__(self) -> str:
        return f"{self.errno.name}: {self.path}: {self.message}"


ConfigResult = CardConfig | ConfigError


class _Fail(Exception):
    def __init__(self, errno: XenErrno, path: str, message: str) -> None:
        super().__init__(message)
        self.errno, self.path, self.message = errno, path, message


class _Reader:
    def __init__(self, nodes: Mapping[str, bytes | str]) -> None:
        self.nodes: dict[str, bytes] = {}
        for key, value in nodes.items():
            raw = value.encode() if isinstance(value, str) else bytes(value)
            self.nodes[key.strip("/")] = raw
        self.notes: list[Note] = []

    def note(self, clause: str, path: str, text: str) -> None:
        self.notes.append(Note(clause, path, text))

    def exists(self, path: str) -> bool:
        prefix = path + "/"
        return path in self.nodes or any(k.startswith(prefix) for k in self.nodes)

    def read(self, path: str) -> bytes | None:
        """xenbus_read: the value as a C string (cut at the first NUL)."""
        raw = self.nodes.get(path)
        return None if raw is None else raw.split(b"\0", 1)[0]

    def read_unsigned(self, path: str) -> int:
        """xenbus_read_unsigned(..., 0): sscanf "%u"; 0 when absent or unparsable."""
        raw = self.read(path)
        if raw is None:
            return 0
        text = raw.decode("latin-1")
        body = text.lstrip(string.whitespace)
        digits = ""
        for c in body:
            if c not in string.digits:
                break
            digits += c
        if not digits:
            self.note("SND-A-23", path, f"value {text!r} is not a number; Linux treats it "
                                        "as not set")
            return 0
        value = int(digits) & 0xFFFF_FFFF  # %u into an unsigned int
        if digits != text:
            self.note("SND-A-23", path, f"value {text!r} is not a clean decimal; Linux "
                                        f"reads {value}")
        return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _read_pcm_hw(r: _Reader, prefix: str, parent: PcmHw | None) -> PcmHw:
    """cfg_read_pcm_hw: inherit the parent, override from this level, then adjust."""
    hw = parent or DEFAULT_PCM_HW
    changes: dict[str, object] = {}
    for key, attr in ((XsField.CHANNELS_MIN, "channels_min"),
                      (XsField.CHANNELS_MAX, "channels_max")):
        value = r.read_unsigned(_join(prefix, key))
        if value:  # `int val; if (val)`: only non-zero overrides
            changes[attr] = value
    rates = r.read(_join(prefix, XsField.SAMPLE_RATES))
    if rates is not None:
        changes.update(_rates(r, _join(prefix, XsField.SAMPLE_RATES), rates))
    formats = r.read(_join(prefix, XsField.SAMPLE_FORMATS))
    if formats is not None:
        changes.update(_formats(r, _join(prefix, XsField.SAMPLE_FORMATS), formats))
    buf = r.read_unsigned(_join(prefix, XsField.BUFFER_SIZE))
    if buf:
        changes["buffer_bytes_max"] = buf
    hw = replace(hw, **changes)  # type: ignore[arg-type]
    # "Update configuration to match new values."
    return replace(hw, channels_min=min(hw.channels_min, hw.channels_max),
                   rate_min=min(hw.rate_min, hw.rate_max),
                   period_bytes_max=hw.buffer_bytes_max,
                   periods_max=hw.buffer_bytes_max // hw.period_bytes_min)


def _rates(r: _Reader, path: str, raw: bytes) -> dict[str, object]:
    """cfg_hw_rates: strsep on ",", exact (strncasecmp) match against the 12 ALSA rates."""
    table = {str(rate).encode(): rate for rate in ALSA_STANDARD_RATES}
    found, dropped = set(), []
    for entry in raw.split(XENSND_LIST_SEPARATOR.encode()):
        if entry.lower() in table:
            found.add(table[entry.lower()])
        else:
            dropped.append(entry.decode("latin-1"))
    if dropped:
        r.note("AMBIG-18", path, f"entries {dropped} are not ALSA standard rates and are "
                                 "dropped by Linux")
    if not found:
        r.note("AMBIG-18", path, "no rate recognised: Linux keeps the parent's rates")
        return {}
    return {"rates": frozenset(found), "rates_continuous": False,
            "rate_min": min(found), "rate_max": max(found)}


def _formats(r: _Reader, path: str, raw: bytes) -> dict[str, object]:
    """cfg_formats: case-insensitive match against the 25 sndif strings."""
    found, dropped = set(), []
    for entry in raw.split(XENSND_LIST_SEPARATOR.encode()):
        fmt = PCM_FORMAT_BY_XS_NAME.get(entry.lower().decode("latin-1"))
        if fmt is None:
            dropped.append(entry.decode("latin-1"))
        else:
            found.add(fmt)
    if dropped:
        libxl = [d for d in dropped if d.lower() in _LIBXL_FLOAT_NAMES]
        r.note("AMBIG-14" if libxl else "SND-A-07", path,
               f"entries {dropped} are not sndif format strings and are dropped by Linux"
               + (" (libxl writes f32_le/f64_le where sndif.h says float_le/float64_le)"
                  if libxl else ""))
    if not found:
        r.note("SND-A-07", path, "no format recognised: Linux keeps the parent's formats")
        return {}
    return {"formats": frozenset(found)}


def _stream_type(r: _Reader, path: str) -> str:
    """cfg_get_stream_type: whole-string, case-insensitive "p"/"c" (SND-A-06)."""
    raw = r.read(_join(path, XsField.TYPE))
    if raw is None:
        raise _Fail(XenErrno.ENOENT, _join(path, XsField.TYPE), "stream type missing")
    low = raw.lower()
    if low in (STREAM_TYPE_PLAYBACK.encode(), STREAM_TYPE_CAPTURE.encode()):
        if raw != low:
            r.note("AMBIG-15", _join(path, XsField.TYPE),
                   f"type {raw.decode()!r} is upper case; Linux accepts it, sndif.h lists "
                   "only lower case")
        return low.decode()
    raise _Fail(XenErrno.EINVAL, _join(path, XsField.TYPE),
                f"invalid stream type {raw.decode('latin-1')!r} (expected p or c)")


def _count(r: _Reader, prefix: str, limit: int, what: str) -> int:
    """Probe ``0``, ``1``... until a gap or ``limit``; note what Linux silently skips."""
    n = 0
    while n < limit and r.exists(_join(prefix, str(n))):
        n += 1
    lead = prefix + "/" if prefix else ""
    extra = set()
    for key in r.nodes:
        if key.startswith(lead):
            head = key[len(lead):].split("/", 1)[0]
            if head.isdigit() and int(head) >= n:
                extra.add(int(head))
    if extra:
        beyond = sorted(extra)
        clause = "AMBIG-17" if n == limit else "SND-A-05"
        reason = (f"Linux handles at most {limit} {what}s" if n == limit
                  else f"the probe stops at the missing {what} {n}")
        r.note(clause, prefix or ".", f"{what}(s) {beyond} ignored: {reason}")
    return n


def read_card_config(nodes: Mapping[str, bytes | str], *,
                     max_devices: int = SNDRV_PCM_DEVICES,
                     max_streams: int = VSND_MAX_STREAM) -> ConfigResult:
    """``xen_snd_front_cfg_card`` (SND-A-05..A-08). ``max_devices`` is SNDRV_PCM_DEVICES:
    8, or 254 on kernels with CONFIG_SND_DYNAMIC_MINORS."""
    r = _Reader(nodes)
    try:
        return _card(r, max_devices, max_streams)
    except _Fail as fail:
        return ConfigError(fail.errno, fail.message, fail.path, tuple(r.notes))


def _card(r: _Reader, max_devices: int, max_streams: int) -> CardConfig:
    num_devices = _count(r, "", max_devices, "pcm device")
    if not num_devices:
        raise _Fail(XenErrno.ENODEV, ".", "no devices configured for the sound card")
    card_hw = _read_pcm_hw(r, "", None)
    devices, stream_cnt = [], 0
    for d in range(num_devices):
        dpath = str(d)
        raw_name = r.read(_join(dpath, XsField.DEVICE_NAME))
        name = (raw_name or b"")[:LINUX_PCM_NAME_LEN - 1].decode("utf-8", errors="replace")
        dev_hw = _read_pcm_hw(r, dpath, card_hw)
        n = _count(r, dpath, max_streams, "stream")
        # Linux checks every type first (counting pb/cap), then builds the streams
        types = [_stream_type(r, f"{dpath}/{s}") for s in range(n)]
        streams = []
        for s, kind in enumerate(types):
            spath = f"{dpath}/{s}"
            uid = r.read(_join(spath, XsField.STREAM_UNIQUE_ID))
            streams.append(StreamConfig(
                pcm=d, stream=s, type=kind, index=stream_cnt,
                unique_id=None if uid is None else uid.decode("utf-8", errors="replace"),
                hw=_read_pcm_hw(r, spath, dev_hw)))
            stream_cnt += 1
        devices.append(PcmDeviceConfig(d, name, dev_hw, tuple(streams)))
    return CardConfig(card_hw, tuple(devices), tuple(r.notes))
