"""Linux card-configuration reading (SND-A-05..A-08, A-23; AMBIG-14/15/17/18)."""

from __future__ import annotations

import pytest

from harness.card_config import (
    DEFAULT_PCM_HW,
    CardConfig,
    ConfigError,
    read_card_config,
)
from protocol_models.constants import PcmFormat, XenErrno


def ok(nodes: dict) -> CardConfig:
    result = read_card_config(nodes)
    assert isinstance(result, CardConfig), result
    return result


def test_defaults_sndA07() -> None:
    hw = ok({"0/0/type": b"p"}).streams[0].hw
    assert hw == DEFAULT_PCM_HW
    assert hw.formats == {PcmFormat.U8, PcmFormat.S16_LE}
    assert (hw.rate_min, hw.rate_max, hw.rates_continuous) == (5512, 48000, True)
    assert (hw.channels_min, hw.channels_max, hw.buffer_bytes_max) == (1, 2, 65536)
    assert (hw.period_bytes_min, hw.period_bytes_max, hw.periods_min, hw.periods_max) == \
        (64, 65536, 2, 1024)


def test_inheritance_card_device_stream() -> None:
    cfg = ok({
        "sample-rates": b"8000,44100,48000", "channels-max": b"8", "buffer-size": b"16384",
        "0/sample-formats": b"s32_le,float_le", "0/channels-min": b"2",
        "0/0/type": b"p",
        "0/1/type": b"c", "0/1/sample-rates": b"16000", "0/1/channels-max": b"1",
        "1/0/type": b"p",
    })
    card, pb, cap, other = cfg.hw, *cfg.streams
    assert card.rate_list == (8000, 44100, 48000) and not card.rates_continuous
    assert (card.channels_max, card.buffer_bytes_max, card.periods_max) == (8, 16384, 256)
    assert pb.hw.formats == {PcmFormat.S32_LE, PcmFormat.F32_LE}  # from the device
    assert (pb.hw.channels_min, pb.hw.channels_max) == (2, 8)
    # stream overrides; channels_min adjusted down to channels_max
    assert (cap.hw.rate_list, cap.hw.rate_min, cap.hw.rate_max) == ((16000,), 16000, 16000)
    assert (cap.hw.channels_min, cap.hw.channels_max) == (1, 1)
    assert other.hw.formats == DEFAULT_PCM_HW.formats  # device 1 inherits the card only
    assert [(s.path, s.type, s.index) for s in cfg.streams] == \
        [("0/0", "p", 0), ("0/1", "c", 1), ("1/0", "p", 2)]
    assert cfg.hw.formats_mask == (1 << 1) | (1 << 2)


@pytest.mark.parametrize(("value", "expected", "clause"), [
    (b"0", 2, None),            # zero: no override
    (b"abc", 2, "SND-A-23"),    # unparsable: not set
    (b"-1", 2, "SND-A-23"),     # %u takes no sign
    (b"6x", 6, "SND-A-23"),     # sscanf stops at the garbage
    (b" 4", 4, "SND-A-23"),
    (b"4", 4, None),
])
def test_unsigned_override_rules(value: bytes, expected: int, clause: str | None) -> None:
    cfg = ok({"channels-max": value, "0/0/type": b"p"})
    assert cfg.hw.channels_max == expected
    assert [n.clause for n in cfg.notes] == ([clause] if clause else [])


def test_rates_only_alsa_standard_ambig18() -> None:
    cfg = ok({"sample-rates": b"12345,48000", "0/sample-rates": b"7,9", "0/0/type": b"p"})
    assert cfg.hw.rate_list == (48000,)
    assert cfg.streams[0].hw.rate_list == (48000,)  # none recognised: parent's kept
    assert [n.clause for n in cfg.notes] == ["AMBIG-18", "AMBIG-18", "AMBIG-18"]


def test_formats_libxl_floats_dropped_ambig14() -> None:
    cfg = ok({"sample-formats": b"f32_le,S16_LE", "0/0/type": b"p"})
    assert cfg.hw.formats == {PcmFormat.S16_LE}  # case-insensitive match, f32_le dropped
    assert [n.clause for n in cfg.notes] == ["AMBIG-14"]
    only_libxl = ok({"sample-formats": b"f64_le", "0/0/type": b"p"})
    assert only_libxl.hw.formats == DEFAULT_PCM_HW.formats


def test_type_case_insensitive_ambig15() -> None:
    cfg = ok({"0/0/type": b"P", "0/1/type": b"c"})
    assert [s.type for s in cfg.streams] == ["p", "c"]
    assert [n.clause for n in cfg.notes] == ["AMBIG-15"]


@pytest.mark.parametrize(("nodes", "errno", "path"), [
    ({}, XenErrno.ENODEV, "."),
    ({"sample-rates": b"48000", "1/0/type": b"p"}, XenErrno.ENODEV, "."),  # no device 0
    ({"0/0/unique-id": b"x"}, XenErrno.ENOENT, "0/0/type"),
    ({"0/0/type": b"pl"}, XenErrno.EINVAL, "0/0/type"),
    ({"0/0/type": b""}, XenErrno.EINVAL, "0/0/type"),
    # a bad later stream fails the whole card (SND-A-06)
    ({"0/0/type": b"p", "1/0/type": b"p", "1/1/type": b"x"}, XenErrno.EINVAL, "1/1/type"),
])
def test_fatal_errors(nodes: dict, errno: XenErrno, path: str) -> None:
    result = read_card_config(nodes)
    assert isinstance(result, ConfigError) and not result.ok
    assert (result.errno, result.path) == (errno, path)


def test_limits_and_gaps_ambig17() -> None:
    nodes = {f"{d}/{s}/type": b"p" for d in range(9) for s in range(10)}
    cfg = ok(nodes)
    assert len(cfg.devices) == 8 and all(len(d.streams) == 8 for d in cfg.devices)
    assert cfg.streams[-1].index == 63
    assert {n.clause for n in cfg.notes} == {"AMBIG-17"}
    gap = ok({"0/0/type": b"p", "0/2/type": b"c"})
    assert len(gap.streams) == 1 and gap.notes[0].clause == "SND-A-05"
    # a bad stream beyond the limit is never read (Linux never probes it)
    assert ok({"0/0/type": b"p", "0/8/type": b"x"}).streams[0].type == "p"
    assert len(ok(nodes | {"8/0/type": b"p"}).devices) == 8
    dyn = read_card_config(nodes, max_devices=254)
    assert isinstance(dyn, CardConfig) and len(dyn.devices) == 9


def test_names_unique_id_and_nul() -> None:
    cfg = ok({"short-name": b"S", "0/name": b"x" * 100, "0/0/type": b"p\0junk",
              "0/0/unique-id": b"hw:0"})
    dev = cfg.devices[0]
    assert dev.name == "x" * 79  # strscpy into char[80]
    assert dev.streams[0].type == "p" and dev.streams[0].unique_id == "hw:0"
    assert ok({"0/0/type": "c"}).streams[0].type == "c"  # str values accepted too
