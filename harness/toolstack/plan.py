"""Pure: a vsnd description -> the XenStore nodes libxl writes, and the removal steps.

Mirrors ``libxl__device_add_async`` + ``libxl__set_xenstore_vsnd`` +
``libxl__device_generic_add`` (clauses.md §3.1, SND-A-01..A-03) and
``libxl__initiate_device_generic_remove`` + ``libxl__device_destroy`` (SND-A-18). No I/O:
``harness.toolstack.apply`` carries the result out through an ``api.Store``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from harness.xen.api import Perm
from protocol_models.constants import (
    LIBXL_DESTROY_TIMEOUT_S,
    LIBXL_INIT_TIMEOUT_S,
    PcmFormat,
    XsField,
)
from protocol_models.xenbus import XenbusState

from .vsnd_config import VsndCard, VsndParams, validate_cards

#: ``libxl``: format strings as libxl writes them (lower-case enum names, ``f32_le``; the
#: Linux FE ignores the float ones, AMBIG-14). ``sndif``: the sndif.h strings (``float_le``).
FormatStrings = Literal["libxl", "sndif"]
#: Perms of the card/pcm/stream configuration nodes. ``libxl``: libxl puts them in
#: ``ro_fents`` and writes them with ``ro_frontend_perms`` = backend-owned, FE read-only
#: (``n<be> r<fe>``), so the guest cannot rewrite its own configuration. ``fe-dir``: the FE
#: directory perms (``n<fe> r<be>``), as the clauses.md §3.1 table reads.
ConfigPerms = Literal["libxl", "fe-dir"]


class PlanWrite(NamedTuple):
    """One node: ``value`` None means a directory (mkdir). ``perms`` are the node's
    permissions after the write (set explicitly; equal to what xenstored would inherit
    where libxl relies on inheritance)."""

    path: str
    value: str | None
    perms: tuple[Perm, ...]


@dataclass(frozen=True)
class DevicePlan:
    """Everything for one ``xl`` vsnd device add, to run in ONE transaction: first remove
    ``clear`` (libxl's ``xs_rm`` of stale directories; a missing node is fine), then make
    ``writes`` in order. ``notes`` warn about configurations the Linux FE will reject."""

    fe_domid: int
    be_domid: int
    devid: int
    fe_path: str
    be_path: str
    libxl_path: str
    clear: tuple[str, ...]
    writes: tuple[PlanWrite, ...]
    notes: tuple[str, ...] = ()
    init_timeout: float = float(LIBXL_INIT_TIMEOUT_S)

    def __iter__(self) -> Iterator[PlanWrite]:
        return iter(self.writes)

    @property
    def be_state_path(self) -> str:
        return f"{self.be_path}/{XsField.STATE}"

    def as_dict(self) -> dict[str, str | None]:
        """``{path: value}`` of every node, handy in tests and reports."""
        return {w.path: w.value for w in self.writes}


def fe_dir(fe_domid: int, devid: int) -> str:
    return f"/local/domain/{fe_domid}/device/vsnd/{devid}"


def be_dir(be_domid: int, fe_domid: int, devid: int) -> str:
    return f"/local/domain/{be_domid}/backend/vsnd/{fe_domid}/{devid}"


def libxl_dir(fe_domid: int, devid: int) -> str:
    return f"/libxl/{fe_domid}/device/vsnd/{devid}"


def format_string(fmt: PcmFormat, style: FormatStrings = "libxl") -> str:
    """A format as written to ``sample-formats``: gentypes.py's libxl_C_enum_to_string
    lower-cases the enum name (``f32_le``); sndif.h spells it ``float_le``."""
    return fmt.name.lower() if style == "libxl" else fmt.xs_name


def _param_nodes(prefix: str, p: VsndParams, style: FormatStrings) -> list[tuple[str, str]]:
    """``libxl__set_params``: lists comma-separated, numbers only when non-zero."""
    out = []
    if p.sample_rates:
        out.append((prefix + XsField.SAMPLE_RATES, ",".join(f"{r}" for r in p.sample_rates)))
    if p.sample_formats:
        out.append((prefix + XsField.SAMPLE_FORMATS,
                    ",".join(format_string(f, style) for f in p.sample_formats)))
    for key, value in ((XsField.CHANNELS_MIN, p.channels_min),
                       (XsField.CHANNELS_MAX, p.channels_max),
                       (XsField.BUFFER_SIZE, p.buffer_size)):
        if value:
            out.append((prefix + key, f"{value}"))
    return out


def config_nodes(card: VsndCard, style: FormatStrings = "libxl") -> list[tuple[str, str]]:
    """The FE configuration nodes relative to the FE dir, in libxl's order
    (``libxl__set_xenstore_vsnd``, ``libxl__set_pcms``, ``libxl__set_streams``)."""
    out: list[tuple[str, str]] = []
    if card.long_name is not None:
        out.append((XsField.VCARD_LONG_NAME, card.long_name))
    if card.short_name is not None:
        out.append((XsField.VCARD_SHORT_NAME, card.short_name))
    out += _param_nodes("", card.params, style)
    for pi, pcm in enumerate(card.pcms):
        if pcm.name is not None:
            out.append((f"{pi}/{XsField.DEVICE_NAME}", pcm.name))
        out += _param_nodes(f"{pi}/", pcm.params, style)
        for si, stream in enumerate(pcm.streams):
            sp = f"{pi}/{si}/"
            if stream.unique_id is not None:
                out.append((sp + XsField.STREAM_UNIQUE_ID, stream.unique_id))
            if stream.type is not None:  # enum value 0 has no string: no node (§3.1)
                out.append((sp + XsField.TYPE, stream.type))
            out += _param_nodes(sp, stream.params, style)
    return out


def _linux_notes(card: VsndCard, rel: list[tuple[str, str]]) -> list[str]:
    """What the Linux FE will make of this tree (SND-A-05, A-06): a pcm or stream that got
    no node does not exist in XenStore, and the probe stops at the first gap."""
    present = {path.split("/")[0] for path, _ in rel if "/" in path}
    present |= {"/".join(path.split("/")[:2]) for path, _ in rel if path.count("/") >= 2}
    notes = []
    if not card.pcms:
        notes.append("no pcm: the Linux FE fails with ENODEV (SND-A-05)")
    for pi, pcm in enumerate(card.pcms):
        if str(pi) not in present:
            notes.append(f"pcm {pi} writes no node, so it does not exist in XenStore; the "
                         "Linux FE stops probing there (SND-A-05)")
        for si, stream in enumerate(pcm.streams):
            if f"{pi}/{si}" not in present:
                notes.append(f"pcm {pi}, stream {si} writes no node, so it does not exist "
                             "in XenStore (SND-A-05)")
            elif stream.type is None:
                notes.append(f"pcm {pi}, stream {si} has no type: the Linux FE fails the "
                             "whole card with ENOENT (SND-A-06)")
    return notes


def plan_device(card: VsndCard, fe_domid: int, be_domid: int, devid: int, *,
                format_strings: FormatStrings = "libxl",
                config_perms: ConfigPerms = "libxl") -> DevicePlan:
    """The exact nodes of one vsnd device add (SND-A-01..A-03, §3.1)."""
    validate_cards([card])
    fe, be, lx = fe_dir(fe_domid, devid), be_dir(be_domid, fe_domid, devid), \
        libxl_dir(fe_domid, devid)
    fe_perms = (Perm("n", fe_domid), Perm("r", be_domid))
    be_perms = (Perm("n", be_domid), Perm("r", fe_domid))
    ro_perms = be_perms if config_perms == "libxl" else fe_perms
    noperm = (Perm("n", 0),)
    initialising = str(int(XenbusState.Initialising))

    writes = [
        PlanWrite(fe, None, fe_perms),
        PlanWrite(f"{fe}/{XsField.BACKEND}", be, fe_perms),
        PlanWrite(f"{fe}/{XsField.BACKEND_ID}", str(be_domid), fe_perms),
        PlanWrite(f"{fe}/{XsField.STATE}", initialising, fe_perms),
    ]
    rel = config_nodes(card, format_strings)
    made: set[str] = set()
    for path, value in rel:
        # xs_write creates missing parents (<p>, <p>/<s>) inheriting the FE dir perms;
        # listing them makes the order and perms explicit.
        parts = path.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in made:
                made.add(d)
                writes.append(PlanWrite(f"{fe}/{d}", None, fe_perms))
        writes.append(PlanWrite(f"{fe}/{path}", value, ro_perms))

    bents = [(XsField.FRONTEND_ID, str(fe_domid)), (XsField.ONLINE, "1"),
             (XsField.STATE, initialising)]
    writes += [PlanWrite(be, None, be_perms), PlanWrite(f"{be}/{XsField.FRONTEND}", fe, be_perms)]
    writes += [PlanWrite(f"{be}/{k}", v, be_perms) for k, v in bents]
    # libxl's private copy: frontend, backend and the backend entries, owned by dom0
    writes += [PlanWrite(lx, None, noperm),
               PlanWrite(f"{lx}/{XsField.FRONTEND}", fe, noperm),
               PlanWrite(f"{lx}/{XsField.BACKEND}", be, noperm)]
    writes += [PlanWrite(f"{lx}/{k}", v, noperm) for k, v in bents]
    return DevicePlan(fe_domid=fe_domid, be_domid=be_domid, devid=devid, fe_path=fe,
                      be_path=be, libxl_path=lx, clear=(fe, be, lx), writes=tuple(writes),
                      notes=tuple(_linux_notes(card, rel)))


# --- removal -------------------------------------------------------------------------------

@dataclass(frozen=True)
class WriteNode:
    path: str
    value: str


@dataclass(frozen=True)
class WriteNodeUnless:
    """Write ``value`` unless the node is missing or already holds one of ``unless``."""

    path: str
    value: str
    unless: tuple[str, ...]


@dataclass(frozen=True)
class WaitForNode:
    """Wait (watch + deadline) until ``path`` holds ``value``. On timeout libxl retries
    as a forced removal, which skips the wait and destroys the paths anyway."""

    path: str
    value: str
    timeout: float


@dataclass(frozen=True)
class RemoveTree:
    """``libxl__xs_path_cleanup``: rm the subtree, then every parent left empty."""

    path: str
    prune_empty_parents: bool = True


RemovalStep = WriteNode | WriteNodeUnless | WaitForNode | RemoveTree


@dataclass(frozen=True)
class RemovalPlan:
    """Three phases, each its own transaction except the wait (SND-A-18)."""

    be_state_path: str
    initiate: tuple[WriteNode | WriteNodeUnless, ...]
    wait: WaitForNode
    destroy: tuple[RemoveTree, ...]
    steps: tuple[RemovalStep, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", (*self.initiate, self.wait, *self.destroy))


def plan_removal(fe_domid: int, be_domid: int, devid: int, *,
                 timeout: float = float(LIBXL_DESTROY_TIMEOUT_S)) -> RemovalPlan:
    """``libxl__initiate_device_generic_remove``: BE online=0, BE state=5 unless it is
    already 6, wait for BE state 6, then ``libxl__device_destroy`` (FE, libxl, BE paths)."""
    fe, be, lx = fe_dir(fe_domid, devid), be_dir(be_domid, fe_domid, devid), \
        libxl_dir(fe_domid, devid)
    state = f"{be}/{XsField.STATE}"
    closed = str(int(XenbusState.Closed))
    return RemovalPlan(
        be_state_path=state,
        initiate=(WriteNode(f"{be}/{XsField.ONLINE}", "0"),
                  WriteNodeUnless(state, str(int(XenbusState.Closing)), (closed,))),
        wait=WaitForNode(state, closed, timeout),
        destroy=(RemoveTree(fe), RemoveTree(lx), RemoveTree(be)),
    )
