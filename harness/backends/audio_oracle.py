"""The audio oracle: did the samples arrive, exactly? (pure: bytes in, a verdict out)

A real sound server delays audio by a latency nobody can predict to the frame, pads with
silence before a stream starts and after it ends, and a recording may stop before the end.
None of that is a defect; a changed, dropped or inserted sample is. So both comparisons look
for the one whole-frame *offset* at which the expected frames line up with the actual ones,
and then demand sample-exact equality, with silence allowed only outside the aligned span:

playback  ``actual`` (what reached the sink's monitor) = silence* + ``expected`` (what the
          frontend played) + silence*; a recording that ends early is accepted only with
          ``allow_truncated_end``.
capture   ``actual`` (what the frontend read) = silence* + ``expected[k:k+m]`` + silence*:
          the read may begin anywhere inside the source's signal (the source was already
          playing) and end anywhere, but every frame it holds must be the source's.

``offset_frames`` is the actual frame index at which expected frame 0 lies (negative: the
actual data begins inside the expected signal). Frame indices in a diff are counted in the
*expected* signal, so "frame 1234 of what was played arrived wrong" reads directly; a
non-silent frame where silence was due (before or after the aligned span) has an expected
index outside ``[0, len(expected))`` and an all-silence expected frame.

Periodic signals align ambiguously (a sine matches at every period): use :func:`noise` for
signals whose offset must be unique.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Literal

from protocol_models.constants import PCM_FORMATS, PcmFormat, pcm_format

#: Frames per anchor window used to find candidate offsets.
_ANCHOR_FRAMES = 16
#: Anchor windows taken from the expected signal, and hits kept per anchor.
_ANCHORS, _HITS_PER_ANCHOR = 9, 4
#: Up to this many (expected x actual) frames, every offset is tried.
_BRUTE_FORCE = 20_000
#: Frames compared per slice before falling back to frame by frame.
_CHUNK_FRAMES = 1024

Sample = int | float


@dataclass(frozen=True)
class OracleResult:
    """The verdict. ``first_diff_frame`` counts in the expected signal (see the module doc);
    ``time_s`` is that frame's time in the expected signal."""

    match: bool
    offset_frames: int | None
    first_diff_frame: int | None
    detail: str
    actual_frame: int | None = None  # the first differing frame's index in ``actual``
    time_s: float | None = None
    expected_samples: tuple[Sample, ...] | None = None  # None: the actual data ended first
    actual_samples: tuple[Sample, ...] | None = None  # None: missing (recording ended)
    overlap_frames: int = 0  # expected frames present (matching or not) in ``actual``
    mismatched_frames: int = 0

    def __bool__(self) -> bool:
        return self.match


# --- samples --------------------------------------------------------------------------------

def _info(fmt: PcmFormat | int | str) -> tuple[PcmFormat, int]:
    f = pcm_format(fmt)
    width = PCM_FORMATS[f].width
    if width is None:
        raise ValueError(f"{f.name} has no fixed sample size; the oracle compares PCM only")
    return f, width


def silence_frame(fmt: PcmFormat | int | str, channels: int) -> bytes:
    """One frame of silence: zeros, or the mid value of unsigned formats (the value ALSA's
    ``snd_pcm_format_set_silence`` and PulseAudio write); mu/A-law silence is 0xFF/0xD5."""
    f, width = _info(fmt)
    info = PCM_FORMATS[f]
    if f == PcmFormat.MU_LAW:
        sample = b"\xff"
    elif f == PcmFormat.A_LAW:
        sample = b"\xd5"
    elif info.signed is False:
        mid = 1 << (24 - 1 if f.name[1:3] == "24" else 8 * width - 1)
        sample = mid.to_bytes(width, "big" if info.endian == "big" else "little")
    else:
        sample = bytes(width)
    return sample * channels


def decode_frame(fmt: PcmFormat | int | str, channels: int, frame: bytes) -> tuple[Sample, ...]:
    """The samples of one frame as numbers: integers as stored (S24/U24: the low 24 bits of
    the container, sign-extended for S24), floats as floats, companded/IEC958 as the raw
    code."""
    f, width = _info(fmt)
    info = PCM_FORMATS[f]
    order: Literal["big", "little"] = "big" if info.endian == "big" else "little"
    out: list[Sample] = []
    for c in range(channels):
        raw = frame[c * width:(c + 1) * width]
        if info.kind == "float":
            out.append(struct.unpack((">" if order == "big" else "<")
                                     + ("f" if width == 4 else "d"), raw)[0])
        elif info.kind == "int" and f.name[1:3] == "24":
            v = int.from_bytes(raw, order) & 0xFF_FFFF
            out.append(v - (1 << 24) if info.signed and v & 0x80_0000 else v)
        else:
            out.append(int.from_bytes(raw, order, signed=bool(info.signed)
                                      and info.kind == "int"))
    return tuple(out)


def noise(fmt: PcmFormat | int | str, channels: int, frames: int, seed: int = 0,
          amplitude: float = 0.5) -> bytes:
    """Deterministic white noise at ``amplitude`` of full scale: no period, so an oracle
    alignment is unique, and no frame is silence (a zero sample is nudged to one LSB)."""
    from harness.backends.reference.audio_io import encode_sample  # the ALSA layouts, once

    f, _ = _info(fmt)
    rng = random.Random(seed)
    sil = silence_frame(f, 1)
    out = bytearray()
    for _ in range(frames * channels):
        s = encode_sample(f, rng.uniform(-amplitude, amplitude))
        if s == sil:
            s = encode_sample(f, 0.25)
        out += s
    return bytes(out)


# --- alignment ------------------------------------------------------------------------------

class _Frames:
    """Frame-level view of one signal."""

    def __init__(self, data: bytes, fsz: int) -> None:
        self.data = data[:len(data) - len(data) % fsz]
        self.fsz = fsz
        self.n = len(self.data) // fsz

    def frame(self, i: int) -> bytes:
        return self.data[i * self.fsz:(i + 1) * self.fsz]

    def first_not(self, sil: bytes) -> int | None:
        for i in range(self.n):
            if self.frame(i) != sil:
                return i
        return None


class _Aligner:
    def __init__(self, expected: bytes, actual: bytes, fmt: PcmFormat, channels: int,
                 allow_late_start: bool, allow_truncated_end: bool,
                 max_lead_frames: int | None) -> None:
        self.fsz = PCM_FORMATS[fmt].frame_size(channels)
        self.e, self.a = _Frames(expected, self.fsz), _Frames(actual, self.fsz)
        self.sil = silence_frame(fmt, channels)
        self.late_ok, self.trunc_ok = allow_late_start, allow_truncated_end
        self.max_lead = max_lead_frames

    # What actual frame j must hold, given offset d: expected[j - d] inside the span, else
    # silence. Frames missing at the end count as differences unless truncation is allowed.
    def _want(self, j: int, d: int) -> bytes:
        i = j - d
        return self.e.frame(i) if 0 <= i < self.e.n else self.sil

    def _span_ok(self, j0: int, j1: int, d: int) -> bool:
        """Whether actual frames [j0, j1) are what offset d wants, compared as one slice."""
        fsz, a = self.fsz, self.a.data
        lo, hi = max(j0, d), min(j1, d + self.e.n)  # the part inside the expected span
        if lo < hi:
            if a[lo * fsz:hi * fsz] != self.e.data[(lo - d) * fsz:(hi - d) * fsz]:
                return False
        for s0, s1 in ((j0, min(j1, d)), (max(j0, d + self.e.n), j1)):  # silence parts
            if s0 < s1 and a[s0 * fsz:s1 * fsz] != self.sil * (s1 - s0):
                return False
        return True

    def _scan(self, d: int, count: int, stop_after: int | None) -> tuple[int, int | None]:
        first = None
        for c0 in range(0, self.a.n, _CHUNK_FRAMES):
            if stop_after is not None and count > stop_after:
                break
            c1 = min(c0 + _CHUNK_FRAMES, self.a.n)
            if self._span_ok(c0, c1, d):
                continue
            for j in range(c0, c1):
                if self.a.frame(j) != self._want(j, d):
                    count += 1
                    if first is None:
                        first = j
        return count, first

    def mismatches(self, d: int, stop_after: int | None = None) -> tuple[int, int | None]:
        """(frames differing under offset d, first differing actual frame). Frames missing
        at the end (the actual data ends inside the expected span) differ unless truncation
        is allowed, the first reported as index ``a.n``; leading silence beyond
        ``max_lead`` differs from there on. ``stop_after``: give up counting past it."""
        count, extra = 0, []
        if not self.trunc_ok and d + self.e.n > self.a.n:
            count += d + self.e.n - max(self.a.n, d)
            extra.append(self.a.n)
        if self.max_lead is not None and d > self.max_lead:
            count += d - self.max_lead
            extra.append(self.max_lead)
        count, first = self._scan(d, count, stop_after)
        firsts = [j for j in (first, *extra) if j is not None]
        return count, min(firsts) if firsts else None

    def reach(self, d: int) -> int:
        """How many expected frames arrive intact, in a row, from the first one present in
        the actual data under offset d."""
        lo, hi = max(0, d), min(self.a.n, d + self.e.n)
        fsz, a, e = self.fsz, self.a.data, self.e.data
        j = lo
        while j < hi:
            k = min(j + _CHUNK_FRAMES, hi)
            if a[j * fsz:k * fsz] == e[(j - d) * fsz:(k - d) * fsz]:
                j = k
                continue
            while a[j * fsz:(j + 1) * fsz] == e[(j - d) * fsz:(j - d + 1) * fsz]:
                j += 1
            break
        return max(0, j - lo)

    def hint(self) -> int:
        """The offset the first sound suggests (0 if either side is all silence)."""
        e0, a0 = self.e.first_not(self.sil), self.a.first_not(self.sil)
        return a0 - e0 if e0 is not None and a0 is not None else 0

    def candidates(self, hint: int) -> list[int]:
        """Offsets worth comparing: the hint, then where anchor windows of one signal occur
        (frame-aligned) in the other, both ways round (the actual data may hold only a
        short run from the middle of the expected signal), then 0. Several anchors each,
        so a corrupted one does not hide the true offset."""
        cands = [hint]
        if self.e.n * self.a.n <= _BRUTE_FORCE:
            cands += range(-self.e.n, self.a.n + 1)  # small enough to try every offset
        for src, dst, sign in ((self.e, self.a, 1), (self.a, self.e, -1)):
            for width in (_ANCHOR_FRAMES, 1):  # 1: a run cut short by silence
                for i0, j in self._anchor_hits(src, dst, width):
                    cands.append(sign * (j - i0))
        cands.append(0)
        out = list(dict.fromkeys(cands))
        if not self.late_ok:
            out = [d for d in out if d >= 0] or [0]
        return out

    def _anchor_hits(self, src: _Frames, dst: _Frames, width: int
                     ) -> list[tuple[int, int]]:
        """(frame in src, frame in dst) where a window of src occurs in dst."""
        s0 = src.first_not(self.sil)
        if s0 is None:
            return []
        w = min(width, src.n - s0, dst.n)
        if w <= 0:
            return []
        fsz, span = self.fsz, src.n - s0 - w
        hits: list[tuple[int, int]] = []
        for i0 in sorted({s0 + span * k // (_ANCHORS - 1) for k in range(_ANCHORS)}):
            anchor = src.data[i0 * fsz:(i0 + w) * fsz]
            if anchor == self.sil * w:
                continue
            pos, found = 0, 0
            while found < _HITS_PER_ANCHOR:
                pos = dst.data.find(anchor, pos)
                if pos < 0:
                    break
                if pos % fsz == 0:
                    hits.append((i0, pos // fsz))
                    found += 1
                pos += 1
        return hits


def align(expected: bytes, actual: bytes, fmt: PcmFormat | int | str, channels: int,
          rate: int, *, allow_late_start: bool = False, allow_truncated_end: bool = False,
          max_lead_frames: int | None = None) -> OracleResult:
    """Find the offset at which ``expected`` sits in ``actual`` with silence around it and
    compare sample-exactly (see the module doc). ``allow_late_start``: ``actual`` may begin
    inside ``expected``; ``allow_truncated_end``: ``actual`` may end inside it;
    ``max_lead_frames``: at most this much leading silence. A partial trailing frame in
    either input is ignored."""
    f, _ = _info(fmt)
    al = _Aligner(expected, actual, f, channels, allow_late_start, allow_truncated_end,
                  max_lead_frames)
    if al.a.first_not(al.sil) is None and al.e.first_not(al.sil) is not None:
        return OracleResult(False, None, None, f"none of the {al.e.n} expected frames "
                            f"arrived: the {al.a.n} actual frames are all silence")
    hint = al.hint()
    # The best explanation is the offset with the fewest differing frames (then the one
    # nearest the first sound's, then the smallest). But a dropped or inserted frame
    # shifts everything after it, so "fewest" may prefer shifting the part before it;
    # an offset under which clearly more of the signal's beginning arrives intact wins.
    cands = al.candidates(hint)
    counted: dict[int, tuple[int, int | None]] = {}
    bound: int | None = None
    for d in cands:
        counted[d] = al.mismatches(d, stop_after=bound)
        bound = counted[d][0] if bound is None else min(bound, counted[d][0])
    d = min(cands, key=lambda x: (counted[x][0], abs(x - hint), abs(x)))
    reach = {x: al.reach(x) for x in cands}
    longest = max(reach.values())
    if longest >= reach[d] + _ANCHOR_FRAMES:
        tied = [x for x in cands if reach[x] == longest]
        counted.update({x: al.mismatches(x) for x in tied})
        d = min(tied, key=lambda x: (counted[x][0], abs(x - hint), abs(x)))
    counted[d] = al.mismatches(d)  # the exact count (the search stops counting early)
    count, first = counted[d]
    overlap = max(0, min(al.a.n, d + al.e.n) - max(0, d))
    sounding = al.e.first_not(al.sil) is not None
    if count == 0 and sounding and overlap == 0:
        # Silence everywhere is not "the signal arrived": demand some of it.
        what = "all silence" if al.a.first_not(al.sil) is None else "no alignment"
        return OracleResult(False, None, None, f"none of the {al.e.n} expected frames "
                            f"arrived ({al.a.n} actual frames, {what})")
    if count == 0:
        return OracleResult(True, d, None,
                            f"sample-exact: {overlap} of {al.e.n} expected frames at offset "
                            f"{d} ({max(0, d)} frames of leading silence, {al.a.n} actual "
                            f"frames)", overlap_frames=overlap)
    assert first is not None
    i = first - d
    exp = decode_frame(f, channels, al._want(first, d))
    if first >= al.a.n:
        detail = (f"actual data ends at frame {al.a.n}: expected frames {i}..{al.e.n - 1} "
                  f"missing (offset {d})")
        return OracleResult(False, d, i, detail, first, i / rate, exp, None, overlap, count)
    act = decode_frame(f, channels, al.a.frame(first))
    if max_lead_frames is not None and d > max_lead_frames and first == max_lead_frames:
        detail = (f"{d} frames of leading silence before the signal, more than the "
                  f"{max_lead_frames} allowed")
    else:
        where = ("inside the signal" if 0 <= i < al.e.n
                 else "in the leading silence" if i < 0 else "after the end of the signal")
        detail = (f"first difference at expected frame {i} ({i / rate:.6f} s; actual frame "
                  f"{first}, {where}): expected {exp} got {act}; {count} frame(s) differ at "
                  f"offset {d}")
    return OracleResult(False, d, i, detail, first, i / rate, exp, act, overlap, count)


def check_playback(played: bytes, recorded: bytes, fmt: PcmFormat | int | str,
                   channels: int, rate: int, *, allow_truncated_end: bool = False,
                   max_lead_frames: int | None = None) -> OracleResult:
    """What the frontend played (``played``) vs what reached the sink (``recorded``): all
    of it, in order, sample-exact, after any leading silence and before any trailing
    silence."""
    return align(played, recorded, fmt, channels, rate, allow_late_start=False,
                 allow_truncated_end=allow_truncated_end, max_lead_frames=max_lead_frames)


def check_capture(source: bytes, read: bytes, fmt: PcmFormat | int | str, channels: int,
                  rate: int, *, max_lead_frames: int | None = None) -> OracleResult:
    """What the source played (``source``) vs what the frontend read (``read``): a
    contiguous run of the source's frames, sample-exact, with silence allowed only before
    the source started and after it ended."""
    return align(source, read, fmt, channels, rate, allow_late_start=True,
                 allow_truncated_end=True, max_lead_frames=max_lead_frames)
