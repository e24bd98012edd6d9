"""The end-to-end demo: playback and capture through the reference frontend and the
backend under test (the reference backend by default, or any ``--backend``) on the
simulated Xen, every result checked and printed (``sndif-harness demo``).

The checks are the acceptance criteria of a backend: what was played arrives byte for
byte (the reference backend's WAV, the audio host's null sink, or ALSA's file plugin),
CUR_POS arrives every period_sz octets in real time with gap-free ids, capture returns
exactly the source (the reference backend's sine, or the audio host's known signal),
teardown leaves nothing mapped or bound.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.audio_oracle import check_capture, check_playback, noise
from harness.backends.reference.audio_io import read_wav_data, sine_bytes
from harness.frontend import audio
from harness.trace import Trace, render
from harness.world.spec import WorldSpec
from harness.world.world import World, running_world
from protocol_models.constants import PcmFormat, frame_size
from protocol_models.xenbus import XenbusState

RATE, FMT, CHANNELS = 48000, PcmFormat.S16_LE, 2
BUFFER, PERIOD = 64 * 1024, 4096
TONE_HZ = 1000
#: Median event interval may be this far from the ideal (the acceptance bound).
INTERVAL_TOLERANCE_MS = 2.0


@dataclass
class Checks:
    """Named pass/fail results, printed as they are made."""

    out: Callable[[str], None]
    results: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok))
        self.out(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")
        return ok

    def should(self, name: str, ok: bool, detail: str = "") -> bool:
        """A SHOULD of the spec: printed as a warning when not met, the demo still passes."""
        self.out(f"  [{'ok' if ok else 'warn'}] {name}{': ' + detail if detail else ''}")
        return ok

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.results)


def _states(trace: Trace, who: str) -> str:
    seq = [XenbusState(r.fields["state"]).name for r in trace.select("state")
           if r.fields.get("who") == who]
    return " -> ".join(name for name, _ in itertools.groupby(seq)) or "(none)"


def _playback(session: World, seconds: float, check: Checks) -> None:
    assert session.dev is not None
    pcm = sine_bytes(FMT, CHANNELS, RATE, TONE_HZ, 0, int(seconds * RATE) *
                     frame_size(FMT, CHANNELS))
    host = session.audio_host
    if host is not None:
        host.start_recording()
    check.out(f"playback: {seconds:g} s of a {TONE_HZ} Hz sine, {RATE} Hz {FMT.name} "
              f"{CHANNELS} ch, buffer {BUFFER}, period {PERIOD} ({len(pcm)} octets)")
    rep = audio.play(session.dev.stream("0/0"), pcm, RATE, FMT, CHANNELS, BUFFER, PERIOD)
    check("played and drained", rep.ok and bool(rep.drained), rep.error or "")
    positions = [p for _, p, _ in rep.positions]
    deltas = [b - a for a, b in itertools.pairwise([0, *positions])]
    check("positions monotonic (E-03), reaching the total (D-06)",
          bool(positions) and positions == sorted(positions) and positions[-1] >= len(pcm),
          f"{len(positions)} events, last position {positions[-1] if positions else None} "
          f"of {len(pcm)}")
    check.should("about one event per period_sz (E-02: deltas within [period/2, 2 period] "
                 "but the last)",
                 all(PERIOD // 2 <= d <= 2 * PERIOD for d in deltas[:-1]),
                 f"deltas {min(deltas, default=0)}..{max(deltas, default=0)}")
    check.should("no position past what was written (E-07)",
                 bool(positions) and positions[-1] <= len(pcm),
                 f"last position {positions[-1] if positions else None}, written {len(pcm)}")
    ids = rep.event_ids
    check("event ids gap-free", ids == list(range(ids[0], ids[0] + len(ids))) if ids else False,
          f"ids {ids[0]}..{ids[-1]}" if ids else "no events")
    ideal = PERIOD / (RATE * frame_size(FMT, CHANNELS)) * 1000
    intervals = rep.intervals_ms()
    median = statistics.median(intervals) if intervals else float("nan")
    check(f"median event interval within {INTERVAL_TOLERANCE_MS:g} ms of the ideal",
          abs(median - ideal) <= INTERVAL_TOLERANCE_MS,
          f"{median:.3f} ms (ideal {ideal:.3f} ms)")
    _played_arrived(session, pcm, check)
    check("no protocol violations", not rep.violations,
          "; ".join(v.message for v in rep.violations[:3]))


def _played_arrived(session: World, pcm: bytes, check: Checks) -> None:
    """Where the backend's playback went, compared with what the frontend played."""
    mode = session.spec.audio_mode
    if mode == "wav":
        wavs = sorted((session.out / "wav").glob("*.wav"))
        got = read_wav_data(wavs[0]) if len(wavs) == 1 else b""
        check("backend's WAV byte-identical to what was played", got == pcm,
              f"{wavs[0].name}, {len(got)} octets" if wavs else "no WAV written")
    elif mode == "pulse":
        host = session.audio_host
        # the sound server lags the protocol's positions by its latency: wait (bounded)
        rec = host.wait_recorded(
            lambda b: check_playback(pcm, b, FMT, CHANNELS, RATE).match, 5)
        host.stop_recording()
        r = check_playback(pcm, rec, FMT, CHANNELS, RATE)
        check("what was played arrived sample-exact at the audio host's sink", r.match,
              r.detail)
    elif mode == "alsa-file":
        path = session.out / "alsa" / "played.raw"
        got = path.read_bytes() if path.exists() else b""
        r = check_playback(pcm, got, FMT, CHANNELS, RATE)
        check("what was played arrived byte-exact in ALSA's file plugin", r.match, r.detail)
    else:
        check.out("  [--] where the playback went is not checked (--audio none)")


def _capture(session: World, seconds: float, check: Checks) -> None:
    assert session.dev is not None
    host = session.audio_host
    nbytes = int(seconds * RATE) * frame_size(FMT, CHANNELS)
    if host is not None:
        source = noise(FMT, CHANNELS, 3 * int(seconds * RATE) + RATE, seed=5)
        check.out(f"capture: {seconds:g} s from the audio host's known-signal source")
        host.play_into_source(source)
        host.wait_source_playing()
    else:
        check.out(f"capture: {seconds:g} s from the backend's {TONE_HZ} Hz sine source")
    rep = audio.capture(session.dev.stream("0/1"), RATE, FMT, CHANNELS, BUFFER, PERIOD,
                        seconds=seconds)
    if host is not None:
        host.stop_source()
        r = check_capture(source, rep.data, FMT, CHANNELS, RATE, max_lead_frames=RATE // 10)
        check("captured exactly what the source produced", rep.ok and r.match,
              rep.error or r.detail)
    elif session.spec.audio_mode == "wav":
        want = sine_bytes(FMT, CHANNELS, RATE, TONE_HZ, 0, nbytes)
        check("captured exactly the backend's source", rep.ok and rep.data == want,
              rep.error or f"{len(rep.data)} octets")
    else:
        check("captured the requested length", rep.ok and len(rep.data) == nbytes,
              rep.error or f"{len(rep.data)} octets (content not checked without an "
              "audio host)")


def run_demo(out: Path, *, seconds: float = 2.0, echo: Callable[[str], None] = print,
             capture_source: str = f"sine:{TONE_HZ}", spec: WorldSpec | None = None
             ) -> bool:
    """Run the demo against the backend ``spec`` describes (default: the reference
    backend), writing the trace and the backend's files under ``out``.
    ``capture_source`` is the reference backend's; anything but the default must fail the
    capture check (the tests use that to show the checks can fail)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = (spec or WorldSpec()).replace(capture_source=capture_source)
    check = Checks(echo)
    trace = Trace(out / "trace.jsonl")
    echo(f"reference frontend (domain {spec.frontend_domid}) <-> backend {spec.backend} "
         f"(domain {spec.backend_domid}, own process) on the simulated Xen, audio "
         f"{spec.audio_mode}")
    try:
        with running_world(spec, out, trace=trace) as session:
            dev = session.dev
            assert dev is not None
            check("connected", dev.state == XenbusState.Connected,
                  f"frontend {_states(trace, 'frontend')}; "
                  f"backend seen {_states(trace, 'backend')}")
            _playback(session, seconds, check)
            _capture(session, seconds / 2, check)
            echo("teardown")
            dev.close()
            acc = session.accounting
            if acc is not None:
                left = acc.mappings(granter=spec.frontend_domid)
                check("no page of the frontend left mapped", not left, f"{len(left)} mapped")
                ports = [p for p in acc.ports(spec.backend_domid)
                         if p.interdomain and p.remote_domid == spec.frontend_domid]
                check("no event channel left bound", not ports, f"{len(ports)} bound")
            stopped = session.stop_backend("end of demo")
            if stopped is not None:
                check("backend stopped on SIGTERM", not stopped.killed,
                      f"status {stopped.status}")
                if spec.backend.kind == "reference":
                    check("backend exited cleanly", stopped.status == 0,
                          f"status {stopped.status}")
    finally:
        trace.close()
    (out / "trace.txt").write_text(render(trace.records) + "\n")
    echo(f"trace: {out / 'trace.jsonl'} ({len(trace.records)} records; readable: trace.txt)")
    echo(f"verdict: {'PASS' if check.passed else 'FAIL'}")
    return check.passed
