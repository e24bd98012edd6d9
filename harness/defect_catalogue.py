"""What a catalogue of injectable defects is made of, shared by both protocol ends (the
reference backend's ``--defect``, the reference frontend's ``--fe-defect``): a defect
names the clauses it breaks and its area; the active set is checked against its own
catalogue, so a misspelt hook fails loudly instead of never firing."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

CLAUSE_ID = re.compile(r"SND-([A-H])-\d\d")
AREAS = {
    "A": "XenStore configuration and state transitions",
    "B": "request ring and event page",
    "C": "open/close and buffer sharing",
    "D": "triggers and stream state machine",
    "E": "CUR_POS events and pacing",
    "F": "HW_PARAM_QUERY negotiation",
    "G": "error paths",
    "H": "volume and mute",
}


@dataclass(frozen=True)
class Defect:
    name: str  # kebab-case, the --defect / --fe-defect argument
    area: str  # "A".."H"
    clauses: tuple[str, ...]  # the clause IDs this bug violates
    description: str  # one line: what the peer then does
    #: set when the behaviour is one the spec leaves open (an AMBIG point): not a bug to
    #: fail, a choice the suites must report (INFO, observed) without judging it
    ambiguity: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "area": self.area, "clauses": list(self.clauses),
                "description": self.description, "ambiguity": self.ambiguity}


def defect(name: str, area: str, clauses: str, description: str,
           ambiguity: str | None = None) -> Defect:
    """A catalogue entry; ``clauses`` space-separated."""
    return Defect(name, area, tuple(clauses.split()), description, ambiguity)


class UnknownDefect(ValueError):
    """A name not in the catalogue; the message names it and suggests close matches."""

    def __init__(self, name: str, known: Iterable[str] = (),
                 listing: str = "'sndif-harness defects' lists them") -> None:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; {listing}"
        super().__init__(f"unknown defect {name!r}{hint}")
        self.name = name


def find(catalogue: Mapping[str, Defect], name: str, listing: str) -> Defect:
    try:
        return catalogue[name]
    except KeyError:
        raise UnknownDefect(name, catalogue, listing) from None


def check_hook(catalogue: Mapping[str, Defect], name: str) -> None:
    """A hook asks for a defect: it must be one of the catalogue."""
    if name not in catalogue:
        raise KeyError(f"defect hook for {name!r}, which is not in the catalogue")


_S = TypeVar("_S", bound="DefectSet")


@dataclass(frozen=True)
class DefectSet:
    """The active defects of one peer; a subclass names its catalogue (``BY_NAME``) and how
    to list it. ``has`` rejects names outside the catalogue."""

    names: frozenset[str] = frozenset()
    BY_NAME: ClassVar[Mapping[str, Defect]] = {}
    LISTING: ClassVar[str] = "'sndif-harness defects' lists them"

    @classmethod
    def of(cls: type[_S], names: Iterable[str]) -> _S:
        """Validated: raises :class:`UnknownDefect` for the first unknown name."""
        return cls(frozenset(find(cls.BY_NAME, n, cls.LISTING).name for n in names))

    def has(self, name: str) -> bool:
        check_hook(self.BY_NAME, name)
        return name in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    def sorted(self) -> list[str]:
        return sorted(self.names)
