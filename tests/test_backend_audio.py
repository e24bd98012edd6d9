"""Audio endpoints of the reference backend: WAV sink bytes/header, capture sources."""

from __future__ import annotations

import json
import math
import struct
import wave

import pytest

from harness.backends.reference.audio_io import (
    FileAudio,
    WavSink,
    encode_sample,
    parse_capture_spec,
    read_wav_data,
    sine_bytes,
)
from protocol_models.constants import PcmFormat


def test_wav_sink_holds_exact_bytes_with_the_open_parameters(tmp_path):
    sink = WavSink(tmp_path / "a.wav", PcmFormat.S16_LE, 44100, 2)
    sink.write(b"\x01\x02\x03\x04")
    sink.write(b"\x05\x06\x07\x08")
    with wave.open(str(tmp_path / "a.wav")) as w:  # valid before close (sizes patched)
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 44100, 2)
        assert w.readframes(10) == bytes(range(1, 9))
    sink.close()
    meta = json.loads((tmp_path / "a.wav.json").read_text())
    assert meta["format"] == "S16_LE" and meta["octets"] == 8 and meta["frame_size"] == 4


def test_big_endian_bytes_are_kept_as_written(tmp_path):
    sink = WavSink(tmp_path / "b.wav", PcmFormat.S32_BE, 8000, 1)
    sink.write(b"\x7f\x00\x00\x01")
    sink.close()
    assert read_wav_data(tmp_path / "b.wav") == b"\x7f\x00\x00\x01"
    assert json.loads((tmp_path / "b.wav.json").read_text())["xs_name"] == "s32_be"


def test_file_audio_numbers_one_file_per_open(tmp_path):
    audio = FileAudio(tmp_path, "silence")
    for _ in range(2):
        s = audio.open_sink("vsnd1-0-0-0", PcmFormat.U8, 8000, 1)
        s.write(b"x")
        s.close()
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["vsnd1-0-0-0-open1.wav",
                                                               "vsnd1-0-0-0-open2.wav"]
    assert audio.open_source("c", PcmFormat.U8, 8000, 1).read(3) == b"\0\0\0"


def test_sine_is_deterministic_and_computable():
    data = sine_bytes(PcmFormat.S16_LE, 1, 8000, 1000.0, 0, 16)
    expect = b"".join(struct.pack("<h", round(0.5 * 32767 * math.sin(2 * math.pi * n / 8)))
                      for n in range(8))
    assert data == expect
    src = parse_capture_spec("sine:1000")(PcmFormat.S16_LE, 8000, 1)
    assert src.read(5) + src.read(11) == expect  # contiguous across reads of odd lengths


@pytest.mark.parametrize("fmt, x, expect", [
    (PcmFormat.U8, 0.0, b"\x80"),
    (PcmFormat.S8, -1.0, b"\x81"),
    (PcmFormat.S16_BE, 1.0, b"\x7f\xff"),
    (PcmFormat.U16_LE, 0.0, b"\x00\x80"),
    (PcmFormat.S24_LE, -1.0, b"\x01\x00\x80\xff"),  # sign-extended in 4 octets
    (PcmFormat.U24_BE, 0.0, b"\x00\x80\x00\x00"),
    (PcmFormat.F32_LE, 0.5, struct.pack("<f", 0.5)),
    (PcmFormat.F64_BE, -0.25, struct.pack(">d", -0.25)),
    (PcmFormat.MU_LAW, 0.0, b"\xff"),
    (PcmFormat.A_LAW, 0.0, b"\xd5"),
    (PcmFormat.IEC958_SUBFRAME_LE, 0.0, b"\0\0\0\0"),
])
def test_sample_encodings(fmt, x, expect):
    assert encode_sample(fmt, x) == expect


def test_wav_capture_source_loops_raw_data(tmp_path):
    sink = WavSink(tmp_path / "src.wav", PcmFormat.U8, 8000, 1)
    sink.write(b"abc")
    sink.close()
    src = parse_capture_spec(str(tmp_path / "src.wav"))(PcmFormat.S16_LE, 48000, 2)
    assert src.read(7) == b"abcabca" and src.read(2) == b"bc"
