"""The clause registry: every clause of ``shared/spec/clauses.md`` as data.

``clauses.toml`` (next to this module) holds one ``[[clause]]`` table per clause: the 93
``SND-X-nn`` of §4 (areas A-H) and the 22 ``AMBIG-n`` of §8. Fields:

* ``id``; ``area`` (A-H; an AMBIG-n gets the area of the clause that cites it);
* ``level``: the primary level (the first one in the clause's bracket), ``levels``: every
  level the clause states (a clause line can hold "[MUST, BE] ... [SHOULD] ...");
* ``side``: who the clause binds: BE, FE, TS, both, FE/TS;
* ``requirement``: our one- or two-sentence summary; ``source``: the header/file cited;
* ``judged_on_backend``: whether a case against a backend can judge it; when false,
  ``reason`` says why (frontend/toolstack-only); ``note`` explains a frontend-side clause
  that still binds the backend;
* ``ambiguities`` (AMBIG-n a SND clause refers to), ``related`` (the clauses an AMBIG-n
  belongs to).

A case cites clauses with ``@pytest.mark.clause("SND-C-09", ...)``; ``"SND-E-06:SHOULD"``
cites one part of a clause at one of its stated levels (the SHOULD half of a MUST clause).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("clauses.toml")
LEVELS = ("MUST", "SHOULD", "MAY", "REF", "AMBIG")
SIDES = ("BE", "FE", "TS", "both", "FE/TS")
AREAS = "ABCDEFGH"
#: Levels whose breach by the backend fails a certification (MUST, and REF: Linux breaks).
BINDING_LEVELS = frozenset({"MUST", "REF"})
#: Levels whose breach is NONSTRICT (a FAIL only with --strict).
ADVISORY_LEVELS = frozenset({"SHOULD", "MAY"})

_ID = re.compile(r"^(?:SND-([A-H])-\d\d|AMBIG-([1-9]\d*))$")


class RegistryError(ValueError):
    """The registry data is inconsistent, or a citation names no clause of it."""


@dataclass(frozen=True)
class Clause:
    id: str
    area: str
    level: str
    levels: tuple[str, ...]
    side: str
    requirement: str
    source: str
    judged_on_backend: bool
    reason: str = ""
    note: str = ""
    #: why no case can judge this backend clause through a frontend (results say it with
    #: the UNTESTED verdict)
    untestable: str = ""
    ambiguities: tuple[str, ...] = ()
    related: tuple[str, ...] = ()

    @property
    def is_ambiguity(self) -> bool:
        return self.id.startswith("AMBIG-")

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "area": self.area, "level": self.level,
                "levels": list(self.levels), "side": self.side,
                "requirement": self.requirement, "source": self.source,
                "judged_on_backend": self.judged_on_backend, "reason": self.reason,
                "note": self.note, "untestable": self.untestable,
                "ambiguities": list(self.ambiguities),
                "related": list(self.related)}


@dataclass(frozen=True)
class Citation:
    """One clause as a case cites it, at the level it is judged on."""

    clause: Clause
    level: str

    @property
    def ref(self) -> str:
        return self.clause.id if self.level == self.clause.level \
            else f"{self.clause.id}:{self.level}"


class Registry:
    """Clauses by ID (in the order of clauses.md) and area titles."""

    def __init__(self, clauses: list[Clause], areas: dict[str, str]) -> None:
        self._clauses = {c.id: c for c in clauses}
        self.areas = dict(areas)

    def __len__(self) -> int:
        return len(self._clauses)

    def __iter__(self) -> Iterator[Clause]:
        return iter(self._clauses.values())

    def __contains__(self, clause_id: object) -> bool:
        return clause_id in self._clauses

    def __getitem__(self, clause_id: str) -> Clause:
        try:
            return self._clauses[clause_id]
        except KeyError:
            raise RegistryError(f"unknown clause {clause_id!r} (not in clauses.md; IDs look "
                                "like SND-C-09 or AMBIG-6)") from None

    def in_area(self, area: str) -> list[Clause]:
        if area not in self.areas:
            raise RegistryError(f"unknown area {area!r}; areas are A-H")
        return [c for c in self if c.area == area]

    def cite(self, ref: str) -> Citation:
        """``"SND-E-06"`` → that clause at its primary level; ``"SND-E-06:SHOULD"`` → at
        one of its other stated levels."""
        clause_id, sep, level = str(ref).strip().partition(":")
        clause = self[clause_id.strip()]
        if not sep:
            return Citation(clause, clause.level)
        level = level.strip().upper()
        if level not in clause.levels:
            raise RegistryError(f"clause {clause.id} states no {level!r} part (its levels: "
                                f"{', '.join(clause.levels)})")
        return Citation(clause, level)


def _clause(raw: dict[str, Any], areas: dict[str, str]) -> Clause:
    cid = raw.get("id")
    if not isinstance(cid, str) or not (m := _ID.match(cid)):
        raise RegistryError(f"bad clause id {cid!r}")
    try:
        clause = Clause(
            id=cid, area=raw["area"], level=raw["level"], levels=tuple(raw["levels"]),
            side=raw["side"], requirement=raw["requirement"].strip(),
            source=raw["source"].strip(), judged_on_backend=raw["judged_on_backend"],
            reason=raw.get("reason", ""), note=raw.get("note", ""),
                untestable=raw.get("untestable", ""),
            ambiguities=tuple(raw.get("ambiguities", ())),
            related=tuple(raw.get("related", ())))
    except (KeyError, AttributeError, TypeError) as exc:
        raise RegistryError(f"{cid}: missing or malformed field {exc}") from None
    problems = []
    if clause.area not in areas:
        problems.append(f"unknown area {clause.area!r}")
    if m.group(1) and m.group(1) != clause.area:
        problems.append(f"area {clause.area!r} does not match the id")
    if clause.level not in LEVELS or any(lv not in LEVELS for lv in clause.levels):
        problems.append(f"unknown level in {clause.level!r} / {list(clause.levels)}")
    if not clause.levels or clause.levels[0] != clause.level:
        problems.append("levels must start with the primary level")
    if clause.side not in SIDES:
        problems.append(f"unknown side {clause.side!r}")
    if not isinstance(clause.judged_on_backend, bool):
        problems.append("judged_on_backend must be true or false")
    elif not clause.judged_on_backend and not clause.reason:
        problems.append("not judged on a backend, but no reason given")
    if not clause.requirement or not clause.source:
        problems.append("empty requirement or source")
    if problems:
        raise RegistryError(f"{cid}: " + "; ".join(problems))
    return clause


def parse_registry(data: dict[str, Any]) -> Registry:
    """Build and validate a registry from the parsed data file."""
    areas = {k: v["title"] for k, v in data.get("area", {}).items()}
    if sorted(areas) != list(AREAS):
        raise RegistryError(f"areas must be exactly A-H, not {sorted(areas)}")
    clauses: list[Clause] = []
    seen: set[str] = set()
    for raw in data.get("clause", []):
        clause = _clause(raw, areas)
        if clause.id in seen:
            raise RegistryError(f"duplicate clause id {clause.id}")
        seen.add(clause.id)
        clauses.append(clause)
    for c in clauses:  # cross references point into the registry
        for ref in (*c.ambiguities, *c.related):
            if ref not in seen:
                raise RegistryError(f"{c.id}: refers to unknown clause {ref}")
    return Registry(clauses, areas)


@functools.cache
def _load_default() -> Registry:
    with DATA_FILE.open("rb") as fh:
        return parse_registry(tomllib.load(fh))


def load_registry(path: str | Path | None = None) -> Registry:
    """The registry of ``path`` (default: the shipped ``clauses.toml``, loaded once)."""
    if path is None:
        return _load_default()
    try:
        with Path(path).open("rb") as fh:
            return parse_registry(tomllib.load(fh))
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: {exc}") from None


__all__ = ["ADVISORY_LEVELS", "AREAS", "BINDING_LEVELS", "LEVELS", "SIDES", "Citation",
           "Clause", "Registry", "RegistryError", "load_registry", "parse_registry"]
