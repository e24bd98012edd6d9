"""The outcome of one case against a supervised backend, with its evidence."""

from __future__ import annotations

import enum
import signal
from dataclasses import asdict, dataclass, field
from typing import Any

#: The prefix of the skip reason that marks a case N/A (harness.certify.outcomes makes it;
#: the report reads it: kept here, free of pytest, so that a backend importing the
#: verdicts does not load pytest).
NA_PREFIX = "N/A: "


class Outcome(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"  # the backend answered, but wrongly (or a check of the case failed)
    CRASH = "CRASH"  # the process died, or a sanitizer reported
    HANG = "HANG"  # alive but not answering / not consuming its ring
    ERROR = "ERROR"  # the harness could not run the case (e.g. restart failed)

    @property
    def backend_failure(self) -> bool:
        """CRASH and HANG end the backend's life: it is restarted before the next case."""
        return self in (Outcome.CRASH, Outcome.HANG)


def signal_name(status: int | None) -> str | None:
    """``-6`` (Popen's "killed by signal 6") → ``"SIGABRT"``."""
    if status is None or status >= 0:
        return None
    try:
        return signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"


@dataclass(frozen=True)
class Finding:
    """Something wrong that is not the case's own verdict, e.g. a leaked grant mapping."""

    kind: str  # "grant-leak", "port-leak", ...
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    detail: str = ""
    nodeid: str = ""
    exit_status: int | None = None  # the process's status (negative: signal)
    signal: str | None = None
    report: str | None = None  # a sanitizer report, verbatim
    log_excerpt: str = ""  # the backend's output during the case (tail)
    findings: tuple[Finding, ...] = ()
    elapsed: float = 0.0
    needs_restart: bool = False  # the backend is restarted before the next case

    def describe(self) -> str:
        """Multi-line text for a test failure or a report."""
        lines = [f"{self.outcome.value}: {self.detail}".rstrip(": ")]
        if self.signal:
            lines.append(f"  signal: {self.signal}")
        elif self.exit_status is not None:
            lines.append(f"  exit status: {self.exit_status}")
        for f in self.findings:
            lines.append(f"  finding: {f}")
        if self.needs_restart:
            lines.append("  the backend is restarted before the next case")
        if self.report:
            lines.append("  sanitizer report:")
            lines += ["    " + ln for ln in self.report.splitlines()]
        elif self.log_excerpt:
            lines.append("  backend output (end):")
            lines += ["    " + ln for ln in self.log_excerpt.splitlines()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


class BackendVerdictError(AssertionError):
    """Raised into a test whose backend crashed or hung (or leaked): the message is the
    verdict with its evidence."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(verdict.describe())
