"""The models, codecs and constants against Xen's real ``io/sndif.h`` (libxen-dev).

``tests/c/sndif_layout.c`` is compiled with gcc and prints sizeof/offsetof of every struct
and field, every constant and string macro, and the bytes of structs filled with known
values; each test compares one part of that with the Python side. Without gcc or the
header the tests skip, saying what to install, except under ``CI=true``, where they fail
(CI installs both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest
from requires import unavailable

from protocol_models import codec, constants, sndif
from protocol_models.codec import Codec
from protocol_models.constants import Evt, Op, PcmFormat, Trigger, XsField

SOURCE = Path(__file__).parent / "c" / "sndif_layout.c"
INSTALL_HINT = "apt-get install gcc libxen-dev"


def _unavailable(reason: str) -> None:
    unavailable(f"{reason}; install it with: {INSTALL_HINT}")


class HeaderFacts:
    """What the C program printed, indexed by kind."""

    def __init__(self, output: str) -> None:
        self.size: dict[str, int] = {}
        self.off: dict[tuple[str, str], tuple[int, int]] = {}
        self.const: dict[str, int] = {}
        self.str: dict[str, str] = {}
        self.hex: dict[str, bytes] = {}
        for line in output.splitlines():
            kind, rest = line.split(" ", 1)
            if kind == "size":
                name, value = rest.split()
                self.size[name] = int(value)
            elif kind == "off":
                struct_name, field, offset, size = rest.split()
                self.off[struct_name, field] = (int(offset), int(size))
            elif kind == "const":
                name, value = rest.split()
                self.const[name] = int(value)
            elif kind == "str":
                name, _, value = rest.partition(" ")
                self.str[name] = value
            elif kind == "hex":
                name, value = rest.split()
                self.hex[name] = bytes.fromhex(value)
            else:
                raise AssertionError(f"unexpected line {line!r}")


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> HeaderFacts:
    gcc = shutil.which("gcc")
    if gcc is None:
        _unavailable("gcc not found")
    tmp = tmp_path_factory.mktemp("sndif_header")
    probe = subprocess.run([gcc, "-E", "-x", "c", "-o", os.devnull, "-"],
                           input="#include <stdint.h>\n#include <xen/io/sndif.h>\n",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        _unavailable(f"the Xen header xen/io/sndif.h is missing ({probe.stderr.strip()[:200]})")
    exe = tmp / "sndif_layout"
    build = subprocess.run([gcc, "-std=gnu11", "-Wall", "-Werror", "-o", str(exe), str(SOURCE)],
                           capture_output=True, text=True)
    assert build.returncode == 0, f"compiling {SOURCE.name} failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    return HeaderFacts(run.stdout)


def spec(c: Codec, name: str) -> tuple[int, int]:
    s = next(s for s in c.fields if s.name == name)
    return s.offset, s.size


# --- layouts ---------------------------------------------------------------------------------

_HW_FIELDS = {"formats": "formats", **{f"{g}.{m}": f"{g}_{m}" for g in
                                      ("rates", "channels", "buffer", "period")
                                      for m in ("min", "max")}}
# (C struct, C field path) -> the codecs and model field name that must sit at the same place.
_HEADER = {"id": "id", "operation": "operation", "reserved": "reserved"}
LAYOUT_MAP: list[tuple[str, str, list[Codec], str]] = [
    *[("xensnd_req", c_name, [*codec.REQ_CODECS.values(), codec.UNKNOWN_REQ], py)
      for c_name, py in _HEADER.items()],
    ("xensnd_req", "op.reserved", [codec.CLOSE_REQ, codec.UNKNOWN_REQ], "reserved_tail"),
    *[("xensnd_req", f"op.open.{n}", [codec.OPEN_REQ], n)
      for n in ("pcm_rate", "pcm_format", "pcm_channels", "buffer_sz", "gref_directory",
                "period_sz")],
    ("xensnd_req", "op.open.reserved", [codec.OPEN_REQ], "open_reserved"),
    *[("xensnd_req", f"op.rw.{n}", [codec.REQ_CODECS[op] for op in sndif.RW_OPS], n)
      for n in ("offset", "length")],
    ("xensnd_req", "op.trigger.type", [codec.TRIGGER_REQ], "type"),
    *[("xensnd_req", f"op.hw_param.{c_name}", [codec.HW_PARAM_REQ], py)
      for c_name, py in _HW_FIELDS.items()],
    *[("xensnd_resp", n, [codec.RESP, codec.HW_PARAM_RESP], n)
      for n in ("id", "operation", "reserved", "status")],
    ("xensnd_resp", "resp.reserved1", [codec.RESP], "reserved_tail"),
    *[("xensnd_resp", f"resp.hw_param.{c_name}", [codec.HW_PARAM_RESP], py)
      for c_name, py in _HW_FIELDS.items()],
    *[("xensnd_evt", n, [codec.EVT, codec.CUR_POS_EVT], n) for n in ("id", "type", "reserved")],
    ("xensnd_evt", "op.reserved", [codec.EVT], "reserved_tail"),
    ("xensnd_evt", "op.cur_pos.position", [codec.CUR_POS_EVT], "position"),
    *[("xensnd_event_page", n, [codec.EVENT_PAGE_HEADER], n)
      for n in ("in_cons", "in_prod", "reserved")],
    ("xensnd_page_directory", "gref_dir_next_page", [codec.PAGE_DIR_HEADER],
     "gref_dir_next_page"),
    *[("xen_sndif_sring", n, [codec.RING_HEADER], n)
      for n in ("req_prod", "req_event", "rsp_prod", "rsp_event", "pvt")],
    ("xen_sndif_sring", "__pad", [codec.RING_HEADER], "pad"),
]


@pytest.mark.parametrize(("c_struct", "c_field", "codecs", "name"), LAYOUT_MAP,
                         ids=[f"{s}.{f}" for s, f, _, _ in LAYOUT_MAP])
def test_field_offsets_and_sizes(header: HeaderFacts, c_struct: str, c_field: str,
                                 codecs: list[Codec], name: str) -> None:
    expected = header.off[c_struct, c_field]
    for c in codecs:
        assert spec(c, name) == expected, f"{c.name}.{name} vs {c_struct}.{c_field}"


def test_every_c_field_is_mapped(header: HeaderFacts) -> None:
    mapped = {(s, f) for s, f, _, _ in LAYOUT_MAP}
    # Whole unions / arrays that are not fields of a model.
    structural = {("xensnd_req", "op"), ("xensnd_resp", "resp"), ("xensnd_evt", "op"),
                  ("xensnd_page_directory", "gref"), ("xensnd_page_directory", "gref[1]"),
                  ("xen_sndif_sring", "ring"), ("xen_sndif_sring", "ring[1]")}
    assert set(header.off) - structural == mapped


@pytest.mark.parametrize(("c_body", "c"), [
    ("xensnd_open_req", codec.OPEN_REQ), ("xensnd_rw_req", codec.WRITE_REQ),
    ("xensnd_trigger_req", codec.TRIGGER_REQ), ("xensnd_query_hw_param", codec.HW_PARAM_REQ),
    ("xensnd_query_hw_param", codec.HW_PARAM_RESP), ("xensnd_cur_pos_evt", codec.CUR_POS_EVT),
])
def test_reserved_tail_starts_where_the_c_struct_ends(header: HeaderFacts, c_body: str,
                                                      c: Codec) -> None:
    body_offset, body_size = header.off["xensnd_req", "op"]
    tail = body_offset + header.size[c_body]
    assert spec(c, "reserved_tail") == (tail, body_offset + body_size - tail)


def test_struct_sizes(header: HeaderFacts) -> None:
    for c_struct in ("xensnd_req", "xensnd_resp", "xensnd_evt"):
        assert header.size[c_struct] == constants.XENSND_MSG_SIZE
    for c in codec.CODECS.values():
        if len(c.layers) == 2:
            assert c.size == header.size["xensnd_req"]
    assert codec.EVENT_PAGE_HEADER.size == header.size["xensnd_event_page"]
    assert codec.RING_HEADER.size == header.off["xen_sndif_sring", "ring"][0]
    assert header.size["xen_sndif_sring_entry"] == constants.XENSND_MSG_SIZE
    assert header.off["xen_sndif_sring", "ring[1]"][0] - header.off[
        "xen_sndif_sring", "ring"][0] == constants.XENSND_MSG_SIZE


def test_page_layouts(header: HeaderFacts) -> None:
    ring = {e.name: e for e in codec.layout(sndif.SndRingPage)}
    assert ring["ring"].offset == header.off["xen_sndif_sring", "ring"][0]
    assert ring["ring"].size == header.const["RING_SIZE_4096"] * header.size[
        "xen_sndif_sring_entry"]
    assert ring["unused"].offset + ring["unused"].size == constants.XEN_PAGE_SIZE
    events = {e.name: e for e in codec.layout(sndif.SndEventPage)}
    assert events["events"].offset == header.const["XENSND_IN_RING_OFFS"]
    assert events["events"].size == header.const["XENSND_IN_RING_LEN"] * header.size[
        "xensnd_evt"]
    pd = {e.name: e for e in codec.layout(sndif.PageDirectory)}
    assert pd["gref"].offset == header.off["xensnd_page_directory", "gref"][0]
    assert codec.PAGE_DIR_GREFS == header.const["PAGE_DIR_GREFS_4096"]
    assert codec.PAGE_DIR_SIZE == constants.XEN_PAGE_SIZE


# --- constants -------------------------------------------------------------------------------

def test_sizes_and_limits(header: HeaderFacts) -> None:
    c = header.const
    assert constants.XENSND_RING_SIZE == c["RING_SIZE_4096"]
    assert constants.XENSND_IN_RING_LEN == c["XENSND_IN_RING_LEN"]
    assert constants.XENSND_IN_RING_OFFS == c["XENSND_IN_RING_OFFS"]
    assert constants.XENSND_IN_RING_SIZE == c["XENSND_IN_RING_SIZE"]
    assert constants.XEN_PAGE_SIZE == c["XENSND_EVENT_PAGE_SIZE"]
    assert constants.XENSND_PAGE_DIR_GREFS == c["PAGE_DIR_GREFS_4096"]
    assert constants.XENSND_PROTOCOL_VERSION == c["XENSND_PROTOCOL_VERSION"]
    assert constants.XENSND_SAMPLE_RATE_MAX_LEN == c["XENSND_SAMPLE_RATE_MAX_LEN"]
    assert constants.XENSND_SAMPLE_FORMAT_MAX_LEN == c["XENSND_SAMPLE_FORMAT_MAX_LEN"]


def _prefixed(table: dict[str, Any], prefix: str, suffix: str = "",
              exclude: str | None = None) -> dict[str, Any]:
    return {k[len(prefix):len(k) - len(suffix)]: v for k, v in table.items()
            if k.startswith(prefix) and k.endswith(suffix)
            and not (exclude and k.startswith(exclude))}


@pytest.mark.parametrize(("prefix", "exclude", "enum"), [
    ("XENSND_OP_TRIGGER_", None, Trigger),
    ("XENSND_OP_", "XENSND_OP_TRIGGER_", Op),
    ("XENSND_EVT_", None, Evt),
    ("XENSND_PCM_FORMAT_", None, PcmFormat),
])
def test_enumerations_equal_the_header(header: HeaderFacts, prefix: str, exclude: str | None,
                                       enum: type[IntEnum]) -> None:
    from_c = _prefixed(header.const, prefix, exclude=exclude)
    assert from_c == {m.name: m.value for m in enum}


def test_format_strings(header: HeaderFacts) -> None:
    from_c = _prefixed(header.str, "XENSND_PCM_FORMAT_", "_STR")
    assert from_c == {f.name: f.xs_name for f in PcmFormat}


def test_xenstore_strings(header: HeaderFacts) -> None:
    fields = _prefixed(header.str, "XENSND_FIELD_")
    assert fields, "no XENSND_FIELD_* printed"
    for name, value in fields.items():
        assert getattr(XsField, name) == value
    assert header.str["XENSND_DRIVER_NAME"] == constants.XENSND_DRIVER_NAME
    assert header.str["XENSND_LIST_SEPARATOR"] == constants.XENSND_LIST_SEPARATOR
    assert header.str["XENSND_STREAM_TYPE_PLAYBACK"] == constants.STREAM_TYPE_PLAYBACK
    assert header.str["XENSND_STREAM_TYPE_CAPTURE"] == constants.STREAM_TYPE_CAPTURE


# --- bytes of known structs ------------------------------------------------------------------

def _seq(seed: int, n: int) -> bytes:
    return bytes((seed + i) & 0xFF for i in range(n))


_HW = dict(formats=0x0123456789ABCDEF, rates_min=8000, rates_max=192000, channels_min=1,
           channels_max=8, buffer_min=64, buffer_max=0x80000, period_min=32,
           period_max=0x40000)
# The same values as known_structs() in sndif_layout.c.
KNOWN_STRUCTS: dict[str, tuple[Codec, dict[str, Any]]] = {
    "open_req": (codec.OPEN_REQ, dict(
        id=0xBEEF, reserved=_seq(0xA0, 5), pcm_rate=48000, pcm_format="S16_LE",
        pcm_channels=2, open_reserved=0x1234, buffer_sz=65536, gref_directory=0xDEADBEEF,
        period_sz=4096, reserved_tail=_seq(0x40, 36))),
    "close_req": (codec.CLOSE_REQ, dict(id=1, reserved_tail=_seq(0x10, 56))),
    "write_req": (codec.WRITE_REQ, dict(id=2, offset=0x1000, length=0x2345)),
    "set_volume_req": (codec.SET_VOLUME_REQ, dict(id=3, offset=8, length=16)),
    "trigger_req": (codec.TRIGGER_REQ, dict(id=4, type=Trigger.RESUME)),
    "hw_param_query_req": (codec.HW_PARAM_REQ, dict(id=5, **_HW)),
    "resp": (codec.RESP, dict(id=0xBEEF, operation=Op.OPEN, reserved=0x77, status="-EINVAL")),
    "hw_param_resp": (codec.HW_PARAM_RESP, dict(id=5, status=0, **_HW)),
    "cur_pos_evt": (codec.CUR_POS_EVT, dict(id=0x4242, reserved=_seq(0xE0, 5),
                                            position=0x0102030405060708)),
    "event_page_header": (codec.EVENT_PAGE_HEADER, dict(in_cons=0xFFFFFFFE, in_prod=0x11)),
    # Model defaults must be what SHARED_RING_INIT writes (req_event = rsp_event = 1).
    "ring_header": (codec.RING_HEADER, dict(req_prod=7, rsp_prod=6)),
}


@pytest.mark.parametrize("name", sorted(KNOWN_STRUCTS))
def test_known_struct_bytes(header: HeaderFacts, name: str) -> None:
    c, values = KNOWN_STRUCTS[name]
    expected = header.hex[name]
    assert c.encode(**values) == expected
    assert bytes(c.scapy(**values))[: c.size] == expected
    assert c.pack_record(c.decode(expected)) == expected


def test_every_known_struct_is_checked(header: HeaderFacts) -> None:
    assert set(header.hex) == {*KNOWN_STRUCTS, "page_directory"}


def test_page_directory_bytes(header: HeaderFacts) -> None:
    expected = header.hex["page_directory"]
    grefs = [100, 101, 102] + [0] * (codec.PAGE_DIR_GREFS - 4) + [0xABCDEF]
    assert codec.encode_page_directory(0x99, grefs) == expected
    assert bytes(sndif.PageDirectory(gref_dir_next_page=0x99, gref=grefs)) == expected
    assert sndif.PageDirectory(expected).gref[-1] == 0xABCDEF
