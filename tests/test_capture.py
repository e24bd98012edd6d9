"""Traces as pcapng captures, and the Wireshark dissector generated from the models:
tshark decodes every field of every message, and its values are the models' decoding of
the same bytes; requests and responses are paired; the shipped ``sndif.lua`` is current."""

from __future__ import annotations

import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from requires import unavailable
from scapy.packet import Packet

from harness.capture import (
    CapturePacket,
    Direction,
    Kind,
    packets_from_trace,
    read_pcapng,
    write_pcapng,
)
from harness.capture.lua import abbrev, generate, shipped
from harness.cli import main
from harness.trace import Trace, load
from protocol_models import codec, sndif
from protocol_models.constants import Op, PcmFormat, Trigger

_CLASSES = {Kind.REQ: sndif.XenSndReq, Kind.RESP: sndif.XenSndResp,
            Kind.EVT: sndif.XenSndEvt}


def _messages(seed: int = 14) -> list[tuple[str, bytes, dict[str, object]]]:
    """Every operation as a request and a response (some failing), HW_PARAM_QUERY both
    ways, events, an unknown operation, random field values."""
    rnd = random.Random(seed)
    out: list[tuple[str, bytes, dict[str, object]]] = []
    for i, op in enumerate([*Op, 0x42]):
        body: dict[str, object] = {}
        if op == Op.OPEN:
            body = dict(pcm_rate=rnd.choice([8000, 44100, 48000]),
                        pcm_format=rnd.choice(list(PcmFormat)), pcm_channels=rnd.randint(1, 8),
                        buffer_sz=65536, gref_directory=rnd.randint(1, 1 << 20),
                        period_sz=4096)
        elif op == Op.TRIGGER:
            body = dict(type=rnd.choice(list(Trigger)))
        elif op == Op.HW_PARAM_QUERY:
            body = dict(formats=["S16_LE", "U8", "F64_BE"], rates_min=8000,
                        rates_max=192000, channels_min=1, channels_max=8, buffer_min=64,
                        buffer_max=1 << 20, period_min=32, period_max=1 << 16)
        elif op in sndif.RW_OPS:
            body = dict(offset=rnd.randrange(1 << 32), length=rnd.randrange(1 << 32))
        req = codec.encode_req(op, id=1000 + i, **body)
        out.append(("req", req, {}))
        status = rnd.choice([0, 0, -22, -5, -95, -12345])
        if op == Op.HW_PARAM_QUERY:
            resp = bytes(sndif.XenSndResp(id=1000 + i, operation=int(op), status=status)
                         / sndif.HwParamResp(**body))
        else:
            resp = codec.encode_resp(id=1000 + i, operation=int(op), status=status)
        out.append(("resp", resp, {"status": status}))
    for k in range(3):
        out.append(("evt", bytes(sndif.XenSndEvt(id=k) / sndif.CurPosEvt(
            position=rnd.randrange(1 << 64))), {"index": k}))
    out.append(("evt", bytes(sndif.XenSndEvt(id=9, type=7)), {}))
    out.append(("req", codec.encode_req(Op.TRIGGER, id=4242, type=0), {}))  # unanswered
    return out


def _trace(path: Path) -> Path:
    trace = Trace(path)
    t = 1_000_000_000
    trace.record("xs", 1, t_ns=t, op="publish_transport", path="/local/domain/1/device/vsnd/0",
                 streams={"0/0": [8, 1, 9, 2], "0/1": [10, 3, 11, 4], "1/0": [1, 2, 3, 4]})
    trace.record("xs", 1, t_ns=t + 1, op="read", path="/local/domain/0/backend/vsnd/1/0/state",
                 result="2", tx=0)
    trace.record("watch", 1, t_ns=t + 2, path="/local/domain/0/backend/vsnd/1/0/state",
                 token="tok")
    for i, (kind, raw, extra) in enumerate(_messages()):
        trace.record(kind, 1, t_ns=t + 1000 * (i + 3), raw=raw,
                     stream="1/0" if i // 2 % 3 == 2 else "0/1", **extra)
    trace.record("violation", 1, t_ns=t + 10**6, stream="0/1", clause="SND-B-09",
                 message="response to no request")
    trace.record("notify", 1, t_ns=t + 10**6 + 1, port=3, stream="0/1")  # not a message
    trace.close()
    return path


# --- pcapng, no tshark needed ------------------------------------------------------------

def test_export_writes_every_message_with_its_header_and_reads_back(tmp_path):
    src = _trace(tmp_path / "trace.jsonl")
    out = tmp_path / "t.pcapng"
    assert main(["trace", "export", str(src), "-o", str(out)]) == 0
    pkts = list(read_pcapng(out))
    recs = list(load(src))
    messages = [r for r in recs if r.kind in ("req", "resp", "evt")]
    assert len(pkts) == len(messages) + 2 + 1 + 1  # + 2 xs, 1 watch, 1 violation
    got = [p for p in pkts if p.kind in _CLASSES]
    assert [p.payload.hex() for p in got] == [r.fields["raw"] for r in messages]
    first = got[0]
    assert (first.kind, first.direction, first.domid, first.path, first.channel) == \
        (Kind.REQ, Direction.FRONT_TO_BACK, 1, "0/1", 1)
    assert any(p.path == "1/0" and p.channel == 2 for p in got)
    assert all(p.direction == Direction.BACK_TO_FRONT for p in got if p.kind != Kind.REQ)
    xs = [p for p in pkts if p.kind == Kind.XENSTORE]
    assert xs[1].payload.decode() == "read /local/domain/0/backend/vsnd/1/0/state result=2"
    assert [p.t_ns for p in pkts] == sorted(p.t_ns for p in pkts)


def test_header_roundtrip_keeps_missing_values_missing():
    p = CapturePacket(5, Kind.WATCH, Direction.FROM_XENSTORE, None, None, None, b"x")
    assert CapturePacket.from_bytes(p.to_bytes(), 5) == p


def test_export_errors_are_one_line_status_2(tmp_path, capsys):
    assert main(["trace", "export", str(tmp_path / "nope.jsonl"), "-o",
                 str(tmp_path / "x.pcapng")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    assert main(["trace", "export", str(bad), "-o", str(tmp_path / "x.pcapng")]) == 2
    assert main(["trace", "export", str(_trace(tmp_path / "t.jsonl")), "-o",
                 str(tmp_path / "x.pcap")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("sndif-harness: ") for line in err)


def test_shipped_dissector_is_the_generated_one(tmp_path):
    assert shipped() == generate(), (
        "harness/capture/sndif.lua is stale: sndif-harness trace dissector -o "
        "harness/capture/sndif.lua")
    out = tmp_path / "sndif.lua"
    assert main(["trace", "dissector", "-o", str(out)]) == 0
    assert out.read_text() == generate()


def test_dissector_names_every_model_field():
    text = generate()
    for cls in (sndif.XenSndReq, sndif.OpenReq, sndif.CloseReq, sndif.RwReq,
                sndif.TriggerReq, sndif.HwParamReq, sndif.ReqReserved, sndif.XenSndResp,
                sndif.HwParamResp, sndif.RespReserved, sndif.XenSndEvt, sndif.CurPosEvt,
                sndif.EvtReserved):
        for fld in cls.fields_desc:
            assert f'"{abbrev(cls, fld.name)}"' in text
    for op in Op:
        assert f'"{op.name}"' in text


# --- tshark -----------------------------------------------------------------------------

def _tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        unavailable("tshark not found: apt-get install tshark")
    return path


def _pdml(lua: Path, capture: Path) -> list[ET.Element]:
    res = subprocess.run([_tshark(), "-X", f"lua_script:{lua}", "-r", str(capture), "-2",
                          "-T", "pdml"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Lua" not in res.stderr or "error" not in res.stderr.lower(), res.stderr
    return ET.fromstring(res.stdout).findall("packet")


def _fields(packet: ET.Element) -> dict[str, ET.Element]:
    return {f.get("name", ""): f for f in packet.iter("field")}


def _mismatches(pkt: CapturePacket, fields: dict[str, ET.Element]) -> list[str]:
    """Every model field of ``pkt``'s message against what tshark showed."""
    problems = []
    msg: Packet = _CLASSES[pkt.kind](pkt.payload)
    for layer in (msg, msg.payload):
        cls = type(layer)
        for entry in codec.layout(cls, sndif.HEADER_SIZE if cls in sndif.BODY_CLASSES
                                  else 0):
            name = abbrev(cls, entry.name)
            f = fields.get(name)
            if f is None:
                problems.append(f"{name}: missing")
                continue
            raw = pkt.payload[entry.offset:entry.offset + (entry.size or 0)]
            if f.get("value") != raw.hex():
                problems.append(f"{name}: bytes {f.get('value')} != {raw.hex()}")
            value = layer.getfieldval(entry.name)
            if isinstance(value, int):
                shown = f.get("show", "")
                if int(shown, 0) != value:
                    problems.append(f"{name}: {shown} != {value}")
                fld = layer.get_field(entry.name)
                if getattr(fld, "i2s", None) and value in fld.i2s:
                    if fld.i2s[value] not in f.get("showname", ""):
                        problems.append(f"{name}: {f.get('showname')} lacks {fld.i2s[value]}")
    return problems


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[CapturePacket]]:
    d = tmp_path_factory.mktemp("capture")
    src = _trace(d / "trace.jsonl")
    out = d / "t.pcapng"
    with open(out, "wb") as fh:
        write_pcapng(fh, packets_from_trace(load(src)))
    return out, list(read_pcapng(out))


def test_tshark_decodes_every_field_as_the_models_do(capture, tmp_path):
    pcap, pkts = capture
    lua = tmp_path / "sndif.lua"
    assert main(["trace", "dissector", "-o", str(lua)]) == 0
    packets = _pdml(lua, pcap)
    assert len(packets) == len(pkts)
    checked = 0
    for pkt, pdml in zip(pkts, packets, strict=True):
        fields = _fields(pdml)
        assert int(fields["sndif.kind"].get("show", "")) == pkt.kind
        assert int(fields["sndif.direction"].get("show", "")) == pkt.direction
        if pkt.kind not in _CLASSES:
            assert "sndif.text" in fields
            continue
        assert int(fields["sndif.domid"].get("show", "")) == pkt.domid
        assert pkt.path == "{}/{}".format(fields["sndif.pcm"].get("show"),
                                          fields["sndif.stream"].get("show"))
        assert int(fields["sndif.channel"].get("show", "")) == pkt.channel
        assert _mismatches(pkt, fields) == []
        checked += 1
    assert checked == len(_messages())


def test_tshark_pairs_requests_and_responses_by_id(capture, tmp_path):
    pcap, pkts = capture
    lua = tmp_path / "sndif.lua"
    lua.write_text(generate())
    packets = _pdml(lua, pcap)
    frame_of = {}
    unanswered = []
    for n, (pkt, pdml) in enumerate(zip(pkts, packets, strict=True), start=1):
        f = _fields(pdml)
        if pkt.kind == Kind.REQ:
            frame_of[n] = f.get("sndif.response_in")
            if "sndif.unanswered" in f:
                assert "sndif.unanswered.expert" in f
                unanswered.append(sndif.XenSndReq(pkt.payload).id)
        elif pkt.kind == Kind.RESP:
            req = int(f["sndif.request_in"].get("show", ""))
            assert sndif.XenSndReq(pkts[req - 1].payload).id == sndif.XenSndResp(pkt.payload).id
            assert frame_of[req] is not None and int(frame_of[req].get("show", "")) == n
            assert float(f["sndif.response_time"].get("show", "")) == pytest.approx(
                (pkt.t_ns - pkts[req - 1].t_ns) / 1e6, abs=1e-3)
            failed = sndif.XenSndResp(pkt.payload).status != 0
            assert ("sndif.status.expert" in f) == failed
        elif pkt.kind == Kind.VIOLATION:
            assert "sndif.violation.expert" in f
    assert len(frame_of) == len(Op) + 2
    assert unanswered == [4242]


def test_tshark_comparison_fails_on_a_wrong_dissector(capture, tmp_path):
    """The check above can fail: a dissector with one offset off by one is caught."""
    pcap, pkts = capture
    text = generate()
    row = 'name="pcm_rate", field=F_OpenReq_pcm_rate, offset=8,'
    assert row in text
    lua = tmp_path / "bad.lua"
    lua.write_text(text.replace(row, row.replace("offset=8,", "offset=9,")))
    packets = _pdml(lua, pcap)
    opens = [(p, x) for p, x in zip(pkts, packets, strict=True)
             if p.kind == Kind.REQ and p.payload[2] == Op.OPEN]
    assert opens
    assert any("sndif.openreq.pcm_rate" in m for p, x in opens
               for m in _mismatches(p, _fields(x)))


def test_tshark_on_a_real_world_trace(tmp_path):
    """A trace the reference frontend recorded against the reference backend."""
    _tshark()
    out = tmp_path / "shell"
    code = ("sr(0, HwParamReq(formats=['S16_LE'], rates_min=8000, rates_max=48000, "
            "channels_min=1, channels_max=2, buffer_min=1, buffer_max=65536, period_min=1, "
            "period_max=65536)); "
            "sr(0, OpenReq(pcm_rate=48000, pcm_format='S16_LE', pcm_channels=2, "
            "buffer_sz=65536, gref_directory=share_buffer(0), period_sz=4096)); "
            "sr(0, CloseReq())")
    res = subprocess.run([*_harness(), "shell", "--out", str(out), "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    pcap = tmp_path / "real.pcapng"
    assert main(["trace", "export", str(out / "trace.jsonl"), "-o", str(pcap)]) == 0
    lua = tmp_path / "sndif.lua"
    lua.write_text(generate())
    pkts = list(read_pcapng(pcap))
    packets = _pdml(lua, pcap)
    msgs = [(p, _fields(x)) for p, x in zip(pkts, packets, strict=True) if p.kind in _CLASSES]
    ops = [sndif.XenSndReq(p.payload).operation for p, _ in msgs if p.kind == Kind.REQ]
    assert ops[-3:] == [Op.HW_PARAM_QUERY, Op.OPEN, Op.CLOSE]
    for p, f in msgs:
        assert _mismatches(p, f) == []


def _harness() -> list[str]:
    import sys

    return [sys.executable, "-m", "harness"]
