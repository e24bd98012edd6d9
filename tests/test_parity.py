"""Parity of the reference frontend with Linux's xen-snd-front on the scenario recorded in a
real guest (harness/xenqemu/data: aplay twice, then arecord, through the reference backend
on Xen 4.17 under QEMU): the same requests, stream by stream, but for the differences
harness/xenqemu/parity.py allows and explains. The live comparison, against a fresh Linux
recording, is in tests/test_xen_qemu.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.frontend.sequence import Recording, Step
from harness.xenqemu import parity
from harness.xenqemu.guest_scenario import CAPTURE, PLAYBACK


@pytest.fixture(scope="module")
def linux() -> Recording:
    return Recording.read(parity.DATA)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return parity.reference_recording(tmp_path_factory.mktemp("parity"))


def test_the_recording_holds_what_linux_did(linux: Recording) -> None:
    """What the stored recording says Linux sent: a narrowing run of queries, then per
    aplay OPEN, the whole second of audio written before START, STOP after the drain,
    CLOSE; arecord START before any READ. (Evidence for the allowances below.)"""
    play = [s.op for s in linux.streams[PLAYBACK] if s.op != parity.HWQ]
    assert play == ["OPEN", "WRITE", "TRIGGER START", "TRIGGER STOP", "CLOSE"] * 2
    cap = [s.op for s in linux.streams[CAPTURE] if s.op != parity.HWQ]
    assert cap == ["OPEN", "TRIGGER START", "READ", "TRIGGER STOP", "CLOSE"]
    assert sum(s.op == parity.HWQ for s in linux.streams[PLAYBACK]) > 2
    assert not any("PAUSE" in s.op or "RESUME" in s.op
                   for steps in linux.streams.values() for s in steps)


def test_the_reference_frontend_sends_what_linux_sent(linux: Recording,
                                                      reference: Recording) -> None:
    found = parity.compare(linux, reference)
    for f in found:
        print(f)
    assert [f for f in found if f.allowed is None] == []
    # the allowances used are the ones explained, and only for the queries
    assert {f.allowed for f in found} <= {"hw-query-refinement", "copy-chunking"}
    assert sum(f.allowed == "hw-query-refinement" for f in found) == 3  # 2 plays + 1 capture


def _edit(rec: Recording, stream: str, i: int, step: Step | None) -> Recording:
    steps = list(rec.streams[stream])
    if step is None:
        del steps[i]
    else:
        steps[i] = step
    return dataclasses.replace(rec, streams={**rec.streams, stream: steps})


def _index(rec: Recording, stream: str, op: str, nth: int = 0) -> int:
    return [i for i, s in enumerate(rec.streams[stream]) if s.op == op][nth]


@pytest.mark.parametrize("what", ["open-period", "stop-missing", "fewer-octets",
                                  "last-query", "widening-query", "extra-close"])
def test_a_frontend_that_differs_is_caught_at_the_step(linux: Recording, reference: Recording,
                                                       what: str) -> None:
    """Each kind of departure from Linux is a difference, reported at its step."""
    ref, lx, pb = reference, linux, PLAYBACK
    if what == "open-period":
        i = _index(ref, pb, "OPEN")
        s = ref.streams[pb][i]
        ref = _edit(ref, pb, i, dataclasses.replace(
            s, asked=tuple((k, v * 2 if k == "period_sz" else v) for k, v in s.asked)))
    elif what == "stop-missing":
        ref = _edit(ref, pb, _index(ref, pb, "TRIGGER STOP", 1), None)
    elif what == "fewer-octets":
        i = _index(ref, pb, "WRITE")
        s = ref.streams[pb][i]
        ref = _edit(ref, pb, i, dataclasses.replace(s, nbytes=s.nbytes - 4000))
    elif what == "last-query":
        i = _index(ref, pb, parity.HWQ)
        s = ref.streams[pb][i]
        ref = _edit(ref, pb, i, dataclasses.replace(
            s, asked=tuple((k, 8192 if k == "buffer_max" else v) for k, v in s.asked)))
    elif what == "widening-query":
        i = _index(lx, pb, parity.HWQ, 3)
        s = lx.streams[pb][i]
        lx = _edit(lx, pb, i, dataclasses.replace(
            s, asked=tuple((k, 2 if k == "channels_max" else v) for k, v in s.asked)))
        # make the previous one narrower still, so that step i widens it
        p = lx.streams[pb][i - 1]
        lx = _edit(lx, pb, i - 1, dataclasses.replace(
            p, asked=tuple((k, 1 if k == "channels_max" else v) for k, v in p.asked)))
    else:
        ref = dataclasses.replace(ref, streams={
            **ref.streams, pb: [*ref.streams[pb], Step("CLOSE")]})
    differences = [f for f in parity.compare(lx, ref) if f.allowed is None]
    assert len(differences) >= 1, what
    assert differences[0].stream == pb


def test_recording_round_trips(linux: Recording, tmp_path: Path) -> None:
    linux.write(tmp_path / "r.json")
    assert Recording.read(tmp_path / "r.json") == linux
