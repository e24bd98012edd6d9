"""Parity of the reference frontend with Linux's ``xen-snd-front``: the same scenario
(the guest's: ``aplay`` of the known signal ``plays`` times, each opening the stream anew,
then one ``arecord``) played by the reference frontend on the simulated Xen, its requests
compared stream by stream with those the reference backend recorded from Linux in a real
guest (:mod:`harness.frontend.sequence`).

Two differences are allowed, each for a stated reason; anything else is a difference:

* ``hw-query-refinement``: before each OPEN Linux sends a run of HW_PARAM_QUERYs, one per
  evaluation of ALSA's hw_params rules as they narrow the space (19 for aplay's
  ``-B``/``-F``); the reference frontend asks once, for the exact configuration (SND-F-03).
  Allowed when both ask at least once and the reference frontend's last query equals
  Linux's last (what was finally asked is the same), and Linux's queries never widen
  (each range inside the previous one's: SND-F-07).
* ``copy-chunking``: how many READ/WRITE requests carry the data is the frontend's choice
  (Linux copies as the application writes, the reference frontend a period at a time);
  the octets moved between two other steps must be equal.

Linux never sends PAUSE or RESUME for an application's pause (SND-D-02: ``alsa_open``
clears ``SNDRV_PCM_INFO_PAUSE``, aplay's pause key is refused in the guest), so there is no
Linux pause sequence to compare with; the reference frontend's own pause/resume is judged
against the clauses by the suites, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.frontend.sequence import Recording, Step, sequences
from harness.xenqemu import scripts
from harness.xenqemu.prepare import (
    FRAME_BYTES,
    RATE,
    known_signal,
)

#: the stored Linux recording (regression data), written by ``xen-qemu run --backend
#: reference --plays 2 --capture`` and compared with every new run
DATA = Path(__file__).resolve().parent / "data" / "linux-aplay-x2-arecord.json"
SCENARIO = "aplay x2, arecord"
SOURCE = ("Linux xen-snd-front (Debian 12's kernel) driven by aplay/arecord in a PV guest on "
          "Xen 4.17 under QEMU, recorded by the reference backend in dom0")
HWQ, MOVES = "HW_PARAM_QUERY", ("READ", "WRITE")


@dataclass(frozen=True)
class Finding:
    stream: str
    allowed: str | None  # the allowance's name; None: a difference
    message: str

    def __str__(self) -> str:
        return f"{self.stream}: {'allowed ' + self.allowed if self.allowed else 'DIFFERENCE'}: " \
               f"{self.message}"


def card_vsnd(plays: int = 1) -> str:
    """The guest's card (its xl.cfg ``vsnd`` value), from the one configuration."""
    cfg = scripts.guest_cfg(1, "ref", RATE, "refc", plays)
    m = re.search(r"^vsnd = (.*)$", cfg, re.M)
    assert m is not None
    return m.group(1)


def linux_recording(run_out: Path, source: str) -> Recording:
    """The Linux frontend's requests of one ``xen-qemu run --backend reference``."""
    from harness.trace import load

    return Recording(SCENARIO, source, sequences(load(run_out / scripts.BACKEND_TRACE)))


def reference_recording(out: Path, *, plays: int = 2, seconds: float = 1.0,
                        capture: bool = True, defects: tuple[str, ...] = ()) -> Recording:
    """The reference frontend through the same scenario on the simulated Xen."""
    from harness.trace import Trace
    from harness.world.spec import load_card
    from harness.world.world import reference_world

    from .guest_scenario import play_scenario
    from .run import nbytes_for

    nbytes = nbytes_for(seconds)
    trace = Trace(out / "trace.jsonl")
    with reference_world(out, trace=trace, defects=defects,
                         card=load_card(card_vsnd())) as world:
        assert world.dev is not None  # a started world has its frontend connected
        played = play_scenario(world.dev, known_signal(nbytes // FRAME_BYTES), plays=plays,
                               capture=capture)
        failed = next((e for e in played.errors if e), None)
        if failed:
            raise RuntimeError(f"reference frontend's playback failed: {failed}")
        if played.capture_error:
            raise RuntimeError(f"reference frontend's capture failed: {played.capture_error}")
        records = trace.records
    return Recording(SCENARIO, "the reference frontend on the simulated Xen",
                     sequences(r for r in records if r.domid != 0))


def _blocks(steps: list[Step]) -> list[list[Step]]:
    """Steps with each run of HW_PARAM_QUERYs as one block (the others alone)."""
    out: list[list[Step]] = []
    for s in steps:
        if s.op == HWQ and out and out[-1][0].op == HWQ:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _inside(inner: Step, outer: Step) -> bool:
    a, b = dict(inner.asked), dict(outer.asked)
    if a["formats"] & ~b["formats"]:
        return False
    return all(b[f"{k}_min"] <= a[f"{k}_min"] and a[f"{k}_max"] <= b[f"{k}_max"]
               for k in ("rates", "channels", "buffer", "period"))


def compare(linux: Recording, ref: Recording) -> list[Finding]:
    """Every allowance used and every difference, stream by stream, in order."""
    found: list[Finding] = []
    for stream in sorted(set(linux.streams) | set(ref.streams)):
        lb, rb = _blocks(linux.streams.get(stream, [])), _blocks(ref.streams.get(stream, []))
        for i in range(max(len(lb), len(rb))):
            if i >= len(lb) or i >= len(rb):
                extra, who = (rb, "the reference frontend") if i >= len(lb) else (lb, "Linux")
                found.append(Finding(stream, None, f"step {i}: only {who} sent "
                                     + "; ".join(str(s) for s in extra[i])))
                break
            finding = _compare_block(stream, i, lb[i], rb[i])
            if finding is not None:
                found.append(finding)
                if finding.allowed is None:
                    break  # after the first difference the rest is out of step
    return found


def _compare_block(stream: str, i: int, lx: list[Step], rf: list[Step]) -> Finding | None:
    a, b = lx[0], rf[0]
    if a.op == HWQ and b.op == HWQ:
        widened = [j for j in range(1, len(lx)) if not _inside(lx[j], lx[j - 1])]
        if lx[-1].asked != rf[-1].asked:
            return Finding(stream, None, f"step {i}: the last HW_PARAM_QUERY differs: Linux "
                                         f"{lx[-1]}, reference {rf[-1]}")
        if widened:
            return Finding(stream, None, f"step {i}: Linux's query {widened[0]} widens the "
                                         f"previous one ({lx[widened[0]]})")
        if len(lx) != len(rf):
            return Finding(stream, "hw-query-refinement",
                           f"step {i}: Linux {len(lx)} queries narrowing to the one the "
                           f"reference frontend sent {len(rf)} time(s)")
        return None
    if a.op in MOVES and b.op == a.op:
        if a.nbytes != b.nbytes:
            return Finding(stream, None, f"step {i}: {a.op} moved {a.nbytes} octets (Linux) "
                                         f"vs {b.nbytes} (reference)")
        if a.count != b.count:
            return Finding(stream, "copy-chunking", f"step {i}: {a.op} of {a.nbytes} octets "
                                                    f"in {a.count} vs {b.count} requests")
        return None
    if a != b:
        return Finding(stream, None, f"step {i}: Linux {a}, reference {b}")
    return None
