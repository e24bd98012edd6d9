"""``sndif-harness ls``, ``dissect`` and ``bench codec``."""

from __future__ import annotations

import io

import pytest

from harness.cli import main
from protocol_models import codec, sndif


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_ls_lists_every_type_with_size_and_field_offsets(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    status, out, _ = run(capsys, "ls")
    assert status == 0
    for cls in sndif.MESSAGE_CLASSES:
        assert f"\n{cls.__name__} (" in "\n" + out
    assert "OpenReq (56 bytes, at offset 8 of the 64-byte message)" in out
    assert "SndRingPage (4096 bytes)" in out
    assert "VolumePayload (variable)" in out


def test_ls_one_type_shows_offsets_sizes_and_types(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "ls", "openreq")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("OpenReq (56 bytes")
    fields = {line.split()[2]: line.split() for line in lines[1:]}
    assert list(fields) == [f.name for f in sndif.OpenReq.fields_desc]
    assert fields["pcm_format"][:2] == ["@12", "1"]
    assert fields["pcm_format"][3] == "ByteEnumField"
    assert fields["reserved_tail"][:2] == ["@28", "36"]


def test_ls_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "ls", "NoSuchThing")
    assert status == 2
    assert out == ""
    assert err.startswith("sndif-harness: unknown message type 'NoSuchThing'")
    assert len(err.strip().splitlines()) == 1


def test_dissect_request_prints_every_field_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    raw = codec.OPEN_REQ.encode(id=7, pcm_rate=44100, pcm_format="S16_LE", pcm_channels=2)
    spaced = " ".join(raw.hex()[i:i + 8] for i in range(0, 128, 8))
    status, out, _ = run(capsys, "dissect", spaced)
    assert status == 0
    assert out.splitlines()[0] == (
        "sndif req id=7 OPEN / rate=44100 S16_LE ch=2 buf=0 period=0 dir=0")
    for name in codec.OPEN_REQ.names:
        assert name in out
    assert "operation = OPEN" in out
    assert "pcm_format= S16_LE" in out


def test_dissect_response_from_stdin(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    raw = codec.HW_PARAM_RESP.encode(id=3, status="-EINVAL", formats=["S16_LE"],
                                     rates_max=48000)
    monkeypatch.setattr("sys.stdin", io.StringIO(raw.hex() + "\n"))
    status, out, _ = run(capsys, "dissect", "--as", "resp", "-")
    assert status == 0
    assert "status    = -EINVAL (-22)" in out
    assert "formats   = 0x4 (S16_LE)" in out
    assert "rates_max = 48000" in out


def test_dissect_pages(capsys: pytest.CaptureFixture[str]) -> None:
    ring = bytes(sndif.SndRingPage(req_prod=1, ring=[sndif.XenSndReq() / sndif.CloseReq()]))
    status, out, _ = run(capsys, "dissect", "--as", "ring", ring.hex())
    assert status == 0
    assert "req_prod  = 1" in out
    assert "operation = CLOSE" in out
    page_dir = bytes(sndif.PageDirectory(gref=[42]))
    status, out, _ = run(capsys, "dissect", "--as", "page-dir", page_dir.hex())
    assert status == 0
    assert "[42] + 1022 x 0" in out
    status, out, _ = run(capsys, "dissect", "--as", "event-page", bytes(4096).hex())
    assert status == 0
    assert "in_prod" in out


@pytest.mark.parametrize(("args", "message"), [
    (["abc"], "odd number of hex digits (3)"),
    (["zz"], "not a hex digit: 'z'"),
    (["00"], "--as req needs exactly 64 bytes, got 1"),
    (["--as", "ring", "00" * 64], "--as ring needs exactly 4096 bytes, got 64"),
    (["  "], "no hex digits given"),
])
def test_dissect_bad_input_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str],
                                                      args: list[str], message: str) -> None:
    status, out, err = run(capsys, "dissect", *args)
    assert status == 2
    assert out == ""
    assert err == f"sndif-harness: {message}\n"


def test_bench_codec_prints_a_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "bench", "codec", "--iterations", "20", "--repeats", "1")
    assert status == 0
    assert "scapy:" in out and "fast codec:" in out
    ratio = [line for line in out.splitlines() if line.strip().startswith("ratio:")]
    assert len(ratio) == 1
    assert float(ratio[0].split()[1]) > 0
