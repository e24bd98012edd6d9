"""OPEN parameters the suites derive from a stream's configuration (harness.judge.streams):
inside the space, whole frames, a ~10 ms period, and None when nothing fits."""

from __future__ import annotations

from dataclasses import replace

from harness.card_config import DEFAULT_PCM_HW, LINUX_MIN_PERIOD_SIZE
from harness.judge.streams import pick_open_params
from protocol_models.constants import PcmFormat


def test_linux_default_space_gives_s16_48k_stereo_10ms():
    p = pick_open_params(DEFAULT_PCM_HW)
    assert p is not None
    assert (p.fmt, p.rate, p.channels, p.frame) == (PcmFormat.S16_LE, 48000, 2, 4)
    assert p.period_sz == 480 * 4 and p.buffer_sz == 8 * p.period_sz
    assert p.seconds(p.period_sz) == 0.01


def test_other_spaces_pick_inside_them():
    hw = replace(DEFAULT_PCM_HW, formats=frozenset({PcmFormat.S32_LE, PcmFormat.GSM}),
                 rates=frozenset({8000, 11025}), rates_continuous=False, rate_min=8000,
                 rate_max=11025, channels_min=1, channels_max=1, buffer_bytes_max=4096)
    p = pick_open_params(hw, period_ms=1)
    assert p is not None
    assert (p.fmt, p.rate, p.channels) == (PcmFormat.S32_LE, 11025, 1)
    assert p.period_sz == LINUX_MIN_PERIOD_SIZE  # 11 frames would be below Linux's 64 octets
    assert p.buffer_sz % p.period_sz == 0 and p.buffer_sz <= 4096


def test_nothing_usable_is_none():
    only_compressed = replace(DEFAULT_PCM_HW, formats=frozenset({PcmFormat.MPEG}))
    assert pick_open_params(only_compressed) is None
    tiny = replace(DEFAULT_PCM_HW, buffer_bytes_max=2000)  # not two 10 ms periods
    assert pick_open_params(tiny) is None
    assert pick_open_params(DEFAULT_PCM_HW, periods=16).buffer_sz == 16 * 1920
