"""HW_PARAM_QUERY answers judged against their request and the card (SND-F-02, F-06).

A space is the ``xensnd_query_hw_param`` payload as a dict keyed by the model's field names
(``formats`` and the ``<name>_min``/``<name>_max`` pairs, as :class:`Response.hw_param`
carries it), so nothing here restates the layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.frontend.stream_core import HW_PARAM_FIELDS, Response
from protocol_models import codec
from protocol_models.constants import PcmFormat

Space = Mapping[str, int]

#: The interval names (``rates``, ``channels``, ``buffer``, ``period``), from the fields.
INTERVALS: tuple[str, ...] = tuple(f[:-4] for f in HW_PARAM_FIELDS if f.endswith("_min"))


def interval(space: Space, name: str) -> tuple[int, int]:
    return space[f"{name}_min"], space[f"{name}_max"]


def request_space(resp: Response) -> dict[str, int]:
    """The space the answered request carried (decoded from its raw bytes)."""
    if resp.request is None:
        raise ValueError("the response matched no request")
    req = codec.decode_req(resp.request.raw)
    return {f: getattr(req, f) for f in HW_PARAM_FIELDS}


def query_kwargs(space: Space) -> dict[str, Any]:
    """Keyword arguments of :meth:`FrontendStream.hw_param_query` asking for ``space``."""
    out: dict[str, Any] = {"formats": space["formats"]}
    for name in INTERVALS:  # the method's keywords are the interval names
        out[name] = interval(space, name)
    return out


def format_names(mask: int) -> list[str]:
    names = [f.name for f in PcmFormat if mask >> int(f) & 1]
    rest = mask & ~sum(f.mask for f in PcmFormat)
    return names + ([f"bits {rest:#x}"] if rest else [])


def empty_problems(space: Space) -> list[str]:
    """Why ``space`` describes no configuration at all (F-02: ALSA fails with -EINVAL)."""
    out = []
    if not space["formats"]:
        out.append("formats mask is 0")
    for name in INTERVALS:
        lo, hi = interval(space, name)
        if lo > hi:
            out.append(f"{name} min {lo} > max {hi}")
    return out


def subset_problems(answer: Space, request: Space, card_formats: int) -> list[str]:
    """Where ``answer`` leaves the request or the card's formats (F-02)."""
    out = []
    extra = answer["formats"] & ~request["formats"]
    if extra:
        out.append(f"formats {format_names(extra)} were not asked for")
    beyond = answer["formats"] & ~card_formats & request["formats"]
    if beyond:
        out.append(f"formats {format_names(beyond)} are not the card's")
    for name in INTERVALS:
        lo, hi = interval(answer, name)
        rlo, rhi = interval(request, name)
        if lo <= hi and (lo < rlo or hi > rhi):
            out.append(f"{name} [{lo}, {hi}] is not inside the requested [{rlo}, {rhi}]")
    return out


def describe(space: Space) -> str:
    parts = [f"formats {format_names(space['formats'])}"]
    parts += [f"{n} [{interval(space, n)[0]}, {interval(space, n)[1]}]" for n in INTERVALS]
    return ", ".join(parts)
