"""The audio oracle finds offsets and the first differing frame exactly."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.backends.audio_oracle import (
    align,
    check_capture,
    check_playback,
    decode_frame,
    noise,
    silence_frame,
)
from harness.backends.reference.audio_io import sine_bytes
from protocol_models.constants import PcmFormat, frame_size

RATE = 48000
FORMATS = [PcmFormat.U8, PcmFormat.S16_LE, PcmFormat.S16_BE, PcmFormat.U16_LE,
           PcmFormat.S24_LE, PcmFormat.S32_BE, PcmFormat.F32_LE, PcmFormat.F64_BE,
           PcmFormat.MU_LAW, PcmFormat.A_LAW]


@st.composite
def signals(draw, min_frames: int = 1):
    fmt = draw(st.sampled_from(FORMATS))
    channels = draw(st.integers(1, 4))
    frames = draw(st.integers(min_frames, 300))
    seed = draw(st.integers(0, 2**32))
    return fmt, channels, noise(fmt, channels, frames, seed)


def frames_of(data: bytes, fmt: PcmFormat, channels: int) -> list[bytes]:
    fsz = frame_size(fmt, channels)
    return [data[i:i + fsz] for i in range(0, len(data), fsz)]


@settings(max_examples=150, deadline=None)
@given(signals(), st.integers(0, 400), st.integers(0, 100))
def test_exact_playback_matches_at_the_leading_silence(sig, lead, tail):
    fmt, ch, e = sig
    sil = silence_frame(fmt, ch)
    r = check_playback(e, sil * lead + e + sil * tail, fmt, ch, RATE)
    assert r.match, r.detail
    assert r.offset_frames == lead
    assert r.overlap_frames == len(e) // frame_size(fmt, ch)
    assert r.first_diff_frame is None


@settings(max_examples=150, deadline=None)
@given(signals(), st.integers(0, 400), st.integers(0, 50), st.data())
def test_a_corrupted_sample_is_found_exactly(sig, lead, tail, data):
    fmt, ch, e = sig
    fsz, sil = frame_size(fmt, ch), silence_frame(fmt, ch)
    n = len(e) // fsz
    c = data.draw(st.integers(0, n - 1), label="corrupt frame")
    octet = data.draw(st.integers(0, fsz - 1), label="octet")
    flip = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(e)
    bad[c * fsz + octet] ^= flip
    r = check_playback(e, sil * lead + bytes(bad) + sil * tail, fmt, ch, RATE)
    assert not r.match
    assert (r.offset_frames, r.first_diff_frame, r.actual_frame) == (lead, c, lead + c), \
        r.detail
    assert r.mismatched_frames == 1
    assert r.expected_samples == decode_frame(fmt, ch, e[c * fsz:(c + 1) * fsz])
    assert r.actual_samples == decode_frame(fmt, ch, bytes(bad[c * fsz:(c + 1) * fsz]))
    assert r.time_s == pytest.approx(c / RATE)


@settings(max_examples=100, deadline=None)
@given(signals(min_frames=2), st.integers(0, 300), st.data())
def test_a_dropped_frame_is_found_where_the_signal_first_diverges(sig, lead, data):
    fmt, ch, e = sig
    sil = silence_frame(fmt, ch)
    fr = frames_of(e, fmt, ch)
    c = data.draw(st.integers(0, len(fr) - 1), label="dropped frame")
    got = sil * lead + b"".join(fr[:c] + fr[c + 1:]) + sil * 5
    # Dropping frame c of a run of equal frames is dropping the run's last one.
    want = next((i for i in range(c, len(fr) - 1) if fr[i] != fr[i + 1]), len(fr) - 1)
    r = check_playback(e, got, fmt, ch, RATE)
    assert not r.match
    # Pinpointed once enough of the signal arrived intact before it; otherwise the shift
    # of the part before it is the better explanation and the report points earlier.
    if want >= 16:
        assert r.first_diff_frame == want, r.detail
    else:
        assert r.first_diff_frame is not None and r.first_diff_frame <= want, r.detail


@settings(max_examples=100, deadline=None)
@given(signals(), st.integers(1, 300), st.data())
def test_noise_in_the_leading_silence_is_reported_before_the_signal(sig, lead, data):
    fmt, ch, e = sig
    sil = silence_frame(fmt, ch)
    fr = frames_of(e, fmt, ch)
    j = data.draw(st.integers(0, lead - 1), label="junk frame")
    junk = data.draw(st.binary(min_size=len(sil), max_size=len(sil)), label="junk")
    assume(junk != sil and junk not in fr)
    got = sil * j + junk + sil * (lead - j - 1) + e
    r = check_playback(e, got, fmt, ch, RATE)
    assert not r.match
    assert (r.offset_frames, r.first_diff_frame, r.actual_frame) == (lead, j - lead, j)
    assert r.expected_samples == decode_frame(fmt, ch, sil)
    assert "leading silence" in r.detail


@settings(max_examples=100, deadline=None)
@given(signals(min_frames=2), st.integers(0, 200), st.data())
def test_a_recording_that_ends_early_is_reported_unless_allowed(sig, lead, data):
    fmt, ch, e = sig
    sil, fsz = silence_frame(fmt, ch), frame_size(fmt, ch)
    n = len(e) // fsz
    m = data.draw(st.integers(1, n - 1), label="frames recorded")
    got = sil * lead + e[:m * fsz]
    r = check_playback(e, got, fmt, ch, RATE)
    assert not r.match
    assert (r.first_diff_frame, r.actual_frame, r.actual_samples) == (m, lead + m, None)
    assert "missing" in r.detail
    ok = check_playback(e, got, fmt, ch, RATE, allow_truncated_end=True)
    assert ok.match and ok.overlap_frames == m and ok.offset_frames == lead


@settings(max_examples=150, deadline=None)
@given(signals(min_frames=2), st.data())
def test_capture_accepts_any_contiguous_run_of_the_source(sig, data):
    fmt, ch, e = sig
    sil, fsz = silence_frame(fmt, ch), frame_size(fmt, ch)
    n = len(e) // fsz
    k = data.draw(st.integers(0, n - 1), label="start")
    m = data.draw(st.integers(1, n - k), label="length")
    lead = data.draw(st.integers(0, 50)) if k == 0 else 0  # silence only before the start
    tail = data.draw(st.integers(0, 50)) if k + m == n else 0  # ... and after the end
    got = sil * lead + e[k * fsz:(k + m) * fsz] + sil * tail
    r = check_capture(e, got, fmt, ch, RATE)
    assert r.match, r.detail
    seg = e[k * fsz:(k + m) * fsz]
    # A short run may occur more than once in the source: any of its places is right.
    places = {-p for p in range(n - m + 1) if e[p * fsz:(p + m) * fsz] == seg
              and (not tail or p + m == n)}
    assert r.offset_frames in ({lead} if lead else places)
    assert r.overlap_frames == m


@settings(max_examples=100, deadline=None)
@given(signals(min_frames=40), st.data())
def test_capture_finds_a_corrupted_read_sample(sig, data):
    fmt, ch, e = sig
    fsz = frame_size(fmt, ch)
    n = len(e) // fsz
    k = data.draw(st.integers(0, n - 40), label="start")
    got = bytearray(e[k * fsz:])
    c = data.draw(st.integers(0, len(got) // fsz - 1), label="corrupt frame")
    got[c * fsz] ^= 0x5A
    r = check_capture(e, bytes(got), fmt, ch, RATE)
    assert not r.match
    assert r.first_diff_frame == k + c, r.detail
    assert r.actual_frame == c


def test_silence_is_not_the_signal_arriving():
    e = noise(PcmFormat.S16_LE, 2, 100, 1)
    for check in (check_playback, check_capture):
        r = check(e, bytes(4 * 500), PcmFormat.S16_LE, 2, RATE)
        assert not r.match and "all silence" in r.detail


def test_leading_silence_can_be_bounded():
    e = noise(PcmFormat.S16_LE, 1, 100, 1)
    got = bytes(2 * 300) + e
    assert check_playback(e, got, PcmFormat.S16_LE, 1, RATE, max_lead_frames=300).match
    r = check_playback(e, got, PcmFormat.S16_LE, 1, RATE, max_lead_frames=299)
    assert not r.match and "leading silence" in r.detail


def test_a_periodic_signal_aligns_at_its_start_not_a_period_later():
    e = sine_bytes(PcmFormat.S16_LE, 2, RATE, 1000, 0, 4 * 4800)
    r = check_playback(e, bytes(4 * 123) + e + bytes(4 * 48), PcmFormat.S16_LE, 2, RATE)
    assert r.match and r.offset_frames == 123


def test_silence_and_decoding_follow_the_format():
    assert silence_frame(PcmFormat.U8, 2) == b"\x80\x80"
    assert silence_frame(PcmFormat.U16_BE, 1) == b"\x80\x00"
    assert silence_frame(PcmFormat.U16_LE, 1) == b"\x00\x80"
    assert silence_frame(PcmFormat.MU_LAW, 1) == b"\xff"
    assert decode_frame(PcmFormat.S16_BE, 2, b"\xff\xfe\x00\x02") == (-2, 2)
    assert decode_frame(PcmFormat.S24_LE, 1, b"\xff\xff\xff\x00") == (-1,)
    assert decode_frame(PcmFormat.U8, 1, b"\x80") == (128,)
    with pytest.raises(ValueError):
        align(b"", b"", PcmFormat.MPEG, 2, RATE)


def test_seconds_of_audio_with_a_long_lead_and_one_flipped_bit():
    e = noise(PcmFormat.S16_LE, 2, 5 * RATE, 7)
    got = bytes(4 * 9000) + e + bytes(4 * 1000)
    r = check_playback(e, got, PcmFormat.S16_LE, 2, RATE)
    assert r.match and r.offset_frames == 9000
    bad = bytearray(got)
    bad[4 * (9000 + 200_000)] ^= 1
    r = check_playback(e, bytes(bad), PcmFormat.S16_LE, 2, RATE)
    assert r.first_diff_frame == 200_000
