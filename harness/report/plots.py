"""The report's plots, as inline SVG text (no files, no network): matplotlib figures drawn
without pyplot (no global state, no GUI backend), written with its SVG backend and cleaned
of everything an inline ``<svg>`` in HTML does not need (XML prolog, DOCTYPE, metadata,
namespace URLs).

:func:`pacing_svg`: a pacing case's CUR_POS events (``evidence.pacing`` of results.json):
position against time with the ideal line ``frame_size * rate``, and the histogram of the
intervals between events with the ideal interval and the tolerance band.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Drawn as text, not glyph outlines: smaller, and searchable in the page.
_RC: dict[Any, Any] = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 9}
_NO_METADATA: dict[str, Any] = {"Creator": None, "Date": None, "Format": None, "Type": None}
_STRIP = (
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*", re.S),
    re.compile(r"<metadata>.*?</metadata>\s*", re.S),
    re.compile(r'\s+xmlns(?::\w+)?="[^"]*"'),
)

_REF = re.compile(r'(?:href="#|url\(#)([^")]+)')
_ID = re.compile(r'\s+id="([^"]*)"')


def _matplotlib() -> Any:
    """matplotlib on its Agg backend, imported on first use: a run without plots (and
    pytest's in-process test runs, which cannot import numpy twice) never loads it."""
    import matplotlib

    matplotlib.use("Agg")  # never a GUI backend, whatever the environment says
    return matplotlib


def figure_svg(fig: Figure, salt: str = "") -> str:
    """``fig`` as an ``<svg>`` element to paste into HTML. ``salt`` makes its ids (clip
    paths, markers) differ from other figures' on the page, and the same on every
    rendering (the page is reproducible from results.json)."""
    buf = io.StringIO()
    with _matplotlib().rc_context({**_RC, "svg.hashsalt": "sndif:" + salt}):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA, bbox_inches="tight")
    svg = buf.getvalue()
    for pattern in _STRIP:
        svg = pattern.sub("", svg)
    # HTML parsers and SVG 2 take plain href; keeps the page free of namespace URLs
    svg = svg.replace("xlink:href", "href")
    # every figure names its groups figure_1, axes_1, ...: keep only the ids referred to
    # (markers, clip paths: hashed, unique), so several plots make no duplicate ids
    used = set(_REF.findall(svg))
    return _ID.sub(lambda m: m.group(0) if m.group(1) in used else "", svg).strip()


def _numbers(values: Any) -> list[float]:
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def pacing_svg(pacing: Mapping[str, Any], title: str = "", salt: str = "") -> str | None:
    """The pacing plot of one case, or None when its evidence carries no samples; ``salt``
    as for :func:`figure_svg` (e.g. the case's nodeid)."""
    samples = pacing.get("samples")
    if not isinstance(samples, Mapping):
        return None
    t_ms, pos = _numbers(samples.get("t_ms")), _numbers(samples.get("position"))
    n = min(len(t_ms), len(pos))
    if n < 2:
        return None
    t_ms, pos = t_ms[:n], pos[:n]
    raw = samples.get("thinned_by")
    thinned = raw if isinstance(raw, int) and raw > 0 else 1
    frame, rate = pacing.get("frame_size"), pacing.get("rate")
    ideal_ms = pacing.get("ideal_interval_ms")

    mpl = _matplotlib()
    from matplotlib.figure import Figure

    with mpl.rc_context(_RC):
        fig = Figure(figsize=(9.0, 3.2))
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        left.plot(t_ms, pos, ".", markersize=3, label="CUR_POS events")
        if isinstance(frame, int) and isinstance(rate, int) and frame > 0 and rate > 0:
            per_ms = frame * rate / 1000.0
            left.plot([t_ms[0], t_ms[-1]], [pos[0], pos[0] + per_ms * (t_ms[-1] - t_ms[0])],
                      "-", linewidth=1, label=f"ideal: {frame * rate} octets/s")
        left.set_xlabel("time since the first event (ms)")
        left.set_ylabel("position (octets)")
        left.set_title("position against time")
        left.legend(loc="upper left", fontsize=8)

        intervals = [(b - a) / thinned for a, b in itertools.pairwise(t_ms)]
        right.hist(intervals, bins=min(40, max(5, len(intervals) // 3)))
        if isinstance(ideal_ms, int | float):
            right.axvline(ideal_ms, color="black", linewidth=1,
                          label=f"ideal {ideal_ms:g} ms")
            band = (pacing.get("tolerance") or {}).get("interval_ratio")
            if isinstance(band, list) and len(band) == 2:
                right.axvspan(band[0] * ideal_ms, band[1] * ideal_ms, alpha=0.15,
                              color="green", label="tolerance band")
            right.legend(loc="upper right", fontsize=8)
        right.set_xlabel("interval between events (ms)" + (
            f", points thinned by {thinned}" if thinned > 1 else ""))
        right.set_ylabel("count")
        right.set_title("interval histogram")
        if title:
            fig.suptitle(title, fontsize=9)
        return figure_svg(fig, salt or title)


__all__ = ["figure_svg", "pacing_svg"]
