"""What the judge found, clause by clause: passes counted, failures and notes kept with
their messages (the evidence of the verdict)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

#: Messages kept per clause and kind (the rest are counted).
KEEP = 12


@dataclass
class ClauseFindings:
    passes: int = 0
    pass_notes: list[str] = field(default_factory=list)
    fails: list[tuple[str, str]] = field(default_factory=list)  # (cited level, message)
    infos: list[str] = field(default_factory=list)
    dropped: int = 0


class Ledger:
    """Findings by clause ID; ``level`` of a failure: the part of the clause broken
    (e.g. "REF" of a MUST/REF clause), None for its primary level."""

    def __init__(self) -> None:
        self.by_clause: dict[str, ClauseFindings] = defaultdict(ClauseFindings)

    def ok(self, clause: str, note: str) -> None:
        f = self.by_clause[clause]
        f.passes += 1
        if note not in f.pass_notes and len(f.pass_notes) < KEEP:
            f.pass_notes.append(note)

    def fail(self, clause: str, message: str, level: str | None = None) -> None:
        f = self.by_clause[clause]
        if len(f.fails) < KEEP:
            f.fails.append((level or "", message))
        else:
            f.dropped += 1

    def info(self, clause: str, message: str) -> None:
        f = self.by_clause[clause]
        if message not in f.infos and len(f.infos) < KEEP:
            f.infos.append(message)

    def failed(self, clause: str) -> bool:
        return clause in self.by_clause and bool(self.by_clause[clause].fails)
