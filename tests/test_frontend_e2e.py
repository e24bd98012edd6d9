"""End-to-end acceptance of the reference frontend: the toolstack creates a card with one
playback and one capture stream on the simulated Xen; the frontend (domain 1, this
process) and the reference backend (domain 0, a separate process) connect; audio moves
both ways and is checked byte for byte; events are timed; teardown leaves nothing behind;
killing and restarting the backend brings the frontend back without the toolstack."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.reference import audio_io as backend_mod
from harness.frontend import audio
from harness.trace import Trace
from harness.world.world import World, reference_world
from protocol_models.constants import PcmFormat, frame_size

FE, BE = 1, 0  # the world's guest and backend domains
RATE, FMT, CH = 48000, PcmFormat.S16_LE, 2
BUFFER, PERIOD = 64 * 1024, 4096


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with reference_world(tmp_path, trace=Trace(tmp_path / "fe.jsonl")) as session:
        yield session


def sine(nbytes: int) -> bytes:
    return backend_mod.sine_bytes(FMT, CH, RATE, 1000, 0, nbytes)


def test_playback_and_capture(world: World) -> None:
    dev = world.dev
    assert dev is not None
    assert [s.type for s in dev.streams] == ["p", "c"]
    pcm = sine(2 * RATE * frame_size(FMT, CH))  # 2 s
    assert len(pcm) % PERIOD  # 93.75 periods: the drain must report a partial period
    rep = audio.play(dev.stream("0/0"), pcm, RATE, FMT, CH, BUFFER, PERIOD)
    assert rep.ok and rep.drained, rep.error
    assert rep.data == pcm and rep.bytes_moved == len(pcm)
    (wav,) = sorted((world.out / "wav").glob("*.wav"))
    assert backend_mod.read_wav_data(wav) == pcm  # byte-identical
    positions = [p for _, p, _ in rep.positions]
    assert positions == sorted(positions) and positions[-1] == len(pcm)
    deltas = [b - a for a, b in itertools.pairwise(positions)]
    assert deltas[:-1] == [PERIOD] * (len(deltas) - 1)  # every period_sz octets (E-02)
    assert deltas[-1] == len(pcm) % PERIOD  # then the end of the data (D-06)
    ids = rep.event_ids
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # gap-free (SND-E-04)
    ideal_ms = PERIOD / (RATE * frame_size(FMT, CH)) * 1000
    median = statistics.median(rep.intervals_ms())
    print(f"playback: {len(ids)} events, median interval {median:.3f} ms "
          f"(ideal {ideal_ms:.3f}), stdev {statistics.pstdev(rep.intervals_ms()):.3f} ms")
    assert abs(median - ideal_ms) <= 2.0
    assert rep.violations == []

    cap = audio.capture(dev.stream("0/1"), RATE, FMT, CH, BUFFER, PERIOD, seconds=1.0)
    assert cap.ok, cap.error
    assert cap.data == sine(RATE * frame_size(FMT, CH))  # exactly the backend's source
    cmed = statistics.median(cap.intervals_ms())
    print(f"capture: {len(cap.event_ids)} events, median interval {cmed:.3f} ms")
    assert cap.violations == [] and dev.violations == []


def test_teardown_leaves_nothing(world: World) -> None:
    dev, sim = world.dev, world.platform.sim  # type: ignore[attr-defined]
    assert dev is not None
    pb = dev.stream(0)
    assert pb.open(RATE, FMT, CH, BUFFER, PERIOD).ok
    assert sim.mappings(granter=FE)  # the backend maps ring, event page and buffer
    dev.close()
    states = [r.fields["state"] for r in dev.trace.select("state")
              if r.fields["who"] == "frontend"]
    assert states[-2:] == [5, 6]
    assert sim.mappings(granter=FE) == []
    assert sim.grants(FE) == []
    assert [p for p in sim.ports(FE) if p.state.name != "FREE"] == []
    stopped = world.stop_backend("test")
    assert stopped is not None and stopped.status == 0 and not stopped.killed
    assert [p for p in sim.ports(BE) if p.remote_domid == FE] == []


def test_reconnects_after_backend_restart(world: World) -> None:
    dev = world.dev
    assert dev is not None
    stream = dev.stream("0/0")
    assert stream.hw_param_query().ok
    assert world.backend is not None
    world.backend.proc.kill()
    world.stop_backend("killed")
    world.start_backend("restart")
    dev.wait_connected(15, generation=2)
    assert dev.stream("0/0") is stream
    assert stream.hw_param_query().ok
    pcm = sine(8 * PERIOD)
    rep = audio.play(stream, pcm, RATE, FMT, CH, BUFFER, PERIOD)
    assert rep.ok and rep.drained and rep.violations == []
    # event ids start again at 0 on the new connection (SND-E-04)
    assert rep.event_ids[0] == 0
