"""The fuzzer against the defect catalogue (``sndif-harness fuzz --catalogue``): a short
campaign per catalogued defect of the reference backend, without the conformance suites,
and a table of what caught each one (the oracle, its clauses, the seconds to the first
finding) with the executions per second.

Each defect runs in a process of its own (a fresh interpreter and world: nothing one
campaign leaves behind can help or hurt the next), ``workers`` at a time. The mode of a
defect's campaign follows its area: the state machine with the rule groups that reach the
area (:data:`harness.fuzz.machine.GROUPS`), or the pipelined request loop for the bugs
that only show under load. A defect whose behaviour the spec leaves open (an AMBIG point,
``Defect.ambiguity``) is not a bug: it is run too and must not be "caught", and it is not
counted in the catch rate.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.reference.defects import CATALOGUE, Defect

#: The share of the catalogue's bugs a short campaign must catch (issue 12).
CATCH_TARGET = 0.8

#: What a defect needs of the card to show at all (the default card's buffers are 64 KiB:
#: one directory page), as ``tests/test_suites_selfcheck.py`` gives it to the suites.
EXTRA_WORLD: dict[str, list[str]] = {
    "ignore-later-directory-pages": [
        "--vsnd", "[['card, sample-rates=48000, sample-formats=s16_le, "
        "buffer-size=8388608', 'pcm, name=dev0', 'stream, unique-id=pb, type=p', "
        "'stream, unique-id=cap, type=c']]"],
}

#: Rule groups of the state machine per area: the groups that can reach the area's bugs
#: (the default campaign runs them all; here fewer rules means more examples of the ones
#: that matter within a few seconds).
AREA_GROUPS: dict[str, tuple[str, ...]] = {
    "A": ("core", "xenstore"),
    "B": ("core", "reserved", "events"),
    "C": ("core", "reserved"),
    "D": ("events",),  # its trigger walk reaches every state in a few steps
    "E": ("events",),
    "F": ("core", "hwquery"),
    "G": ("core",),
    "H": ("core", "volume"),
}
#: Where a defect needs other rules than its area's.
DEFECT_GROUPS: dict[str, tuple[str, ...]] = {
    "unknown-trigger-accepted": ("core",),  # unknown trigger types: core's any-trigger
}
#: Defects that only show with many requests in flight: the pipelined request loop.
REQUEST_LOOP = frozenset({"lose-request-under-load"})
#: Defects whose detection needs more than the default seconds (a 10 s MUST deadline to
#: wait out, a restart): their budget is at least this.
MIN_SECONDS: dict[str, float] = {"no-closed-on-removal": 16.0, "skip-initwait": 14.0,
                                 "require-version-node": 14.0, "ignore-fe-restart": 16.0,
                                 "no-initwait-after-fe-close": 16.0,
                                 # 2048-page buffers: each example costs much more
                                 "ignore-later-directory-pages": 20.0}


@dataclass(frozen=True)
class Plan:
    defect: Defect
    mode: str  # "machine" or "requests"
    groups: tuple[str, ...]
    seconds: float
    world: tuple[str, ...]


def plan(defect: Defect, seconds: float) -> Plan:
    mode = "requests" if defect.name in REQUEST_LOOP else "machine"
    world = ("--backend", "reference", "--defect", defect.name,
             *EXTRA_WORLD.get(defect.name, []))
    groups = DEFECT_GROUPS.get(defect.name) or AREA_GROUPS.get(defect.area, ("core",))
    return Plan(defect, mode, groups,
                max(seconds, MIN_SECONDS.get(defect.name, 0.0)), world)


@dataclass
class Row:
    """One defect's campaign: what caught it (None: nothing within the budget)."""

    defect: str
    area: str
    clauses: list[str]
    ambiguity: str | None
    mode: str
    caught_by: str | None = None
    oracle_clauses: list[str] = field(default_factory=list)
    detail: str = ""
    seconds: float | None = None  # to the first finding
    elapsed: float = 0.0  # the whole campaign
    examples: int = 0
    requests: int = 0
    error: str | None = None  # the harness failed (not the backend)

    @property
    def counted(self) -> bool:
        """A bug to catch (an AMBIG behaviour is allowed, so not one)."""
        return self.ambiguity is None


def run_one(p: Plan, out: Path, seed: int = 0) -> Row:
    """One defect's campaign (in the calling process)."""
    from .campaign import Budget, run_machine, run_requests_mode
    from .driver import DriverConfig
    from .reproducer import world_from_cli

    d = p.defect
    row = Row(d.name, d.area, list(d.clauses), d.ambiguity, p.mode)
    t0 = time.monotonic()
    try:
        spec = world_from_cli(p.world)
        budget = Budget(examples=1_000_000, seconds=p.seconds, shrink_seconds=1.0,
                        steps=16, seed=seed)
        dcfg = DriverConfig(request_timeout=0.5, probe_timeout=0.5)
        if p.mode == "requests":
            result = run_requests_mode(spec, list(p.world), out, budget, dcfg)
        else:
            result = run_machine(spec, list(p.world), out, budget, dcfg, groups=p.groups)
    except Exception as exc:  # the harness, not the backend: said in the table
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}" \
            + _where(exc)
        row.elapsed = round(time.monotonic() - t0, 1)
        return row
    row.elapsed = round(time.monotonic() - t0, 1)
    row.examples, row.requests = result.examples, result.requests
    first = result.first
    if first is not None:
        f = result.found[first]
        row.caught_by, row.oracle_clauses = first, list(f.problem.clauses)
        row.detail = f.problem.detail
        row.seconds = result.first_seconds[first]
    return row


def _where(exc: BaseException) -> str:
    """Where the harness failed (its innermost frame of ours): enough to find the bug from
    a CI log's table row."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/harness/" in f.filename or "/protocol_models/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {Path(f.filename).name}:{f.lineno} in {f.name})"


def _child(p: Plan, out: str, seed: int) -> dict[str, Any]:
    # SIGTERM (a killed parent's pool, a test's timeout) ends the campaign through its
    # context managers, so the backend it runs is stopped too
    signal.signal(signal.SIGTERM, _raise_exit)
    return asdict(run_one(p, Path(out), seed))


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@dataclass
class CatalogueResult:
    rows: list[Row]
    seconds: float
    workers: int

    @property
    def bugs(self) -> list[Row]:
        return [r for r in self.rows if r.counted]

    @property
    def caught(self) -> list[Row]:
        return [r for r in self.bugs if r.caught_by is not None]

    @property
    def rate(self) -> float:
        return len(self.caught) / len(self.bugs) if self.bugs else 0.0

    @property
    def false_alarms(self) -> list[Row]:
        """AMBIG behaviours reported as findings."""
        return [r for r in self.rows if not r.counted and r.caught_by is not None]

    @property
    def executions_per_s(self) -> float:
        busy = sum(r.elapsed for r in self.rows)
        return sum(r.requests for r in self.rows) / busy if busy else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"catch_rate": round(self.rate, 3), "caught": len(self.caught),
                "bugs": len(self.bugs), "seconds": round(self.seconds, 1),
                "workers": self.workers,
                "executions_per_s": round(self.executions_per_s, 1),
                "rows": [asdict(r) for r in self.rows]}


def run_catalogue(out: Path, seconds: float, *, workers: int = 2,
                  names: Sequence[str] | None = None, seed: int = 0,
                  on_row: Callable[[Row], None] | None = None) -> CatalogueResult:
    """A campaign of ``seconds`` per defect (``names``: a subset), ``workers`` at a
    time, each in a fresh process; rows in catalogue order."""
    defects = [d for d in CATALOGUE if names is None or d.name in names]
    plans = [plan(d, seconds) for d in defects]
    # the longest first, so that the workers end together
    order = sorted(range(len(plans)), key=lambda i: -plans[i].seconds)
    t0 = time.monotonic()
    rows: dict[int, Row] = {}
    ctx = multiprocessing.get_context("spawn")  # no threads or fds of ours inherited
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                max_tasks_per_child=1) as pool:
        futures = {pool.submit(_child, plans[i], str(out / plans[i].defect.name), seed): i
                   for i in order}
        try:
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    row = Row(**fut.result())
                except Exception as exc:  # the worker process died: the harness's fault
                    d = plans[i].defect
                    row = Row(d.name, d.area, list(d.clauses), d.ambiguity, plans[i].mode,
                              error=f"worker failed: {type(exc).__name__}: {exc}")
                rows[i] = row
                if on_row is not None:
                    on_row(row)
        except BaseException:
            for f in futures:
                f.cancel()
            _terminate(pool)
            raise
    return CatalogueResult([rows[i] for i in sorted(rows)], time.monotonic() - t0,
                           workers)


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """SIGTERM to the pool's processes (each stops its backend on the way out)."""
    procs = getattr(pool, "_processes", None) or {}
    for proc in list(procs.values()):
        if proc.is_alive() and proc.pid is not None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in list(procs.values()):
        proc.join(timeout=10)


def table(result: CatalogueResult) -> str:
    """The catch table as text."""
    lines = [f"{'defect':34} {'area':4} {'caught by':16} {'clauses':22} {'s':>6} "
             f"{'examples':>8}"]
    for r in result.rows:
        if r.error:
            caught = "ERROR"
        elif r.caught_by is None:
            caught = "-" if r.counted else "- (allowed)"
        else:
            caught = r.caught_by + ("  (AMBIG!)" if not r.counted else "")
        secs = f"{r.seconds:.1f}" if r.seconds is not None else f">{r.elapsed:.0f}"
        lines.append(f"{r.defect:34} {r.area:4} {caught:16} "
                     f"{','.join(r.oracle_clauses)[:22]:22} {secs:>6} {r.examples:>8}")
        if r.error:
            lines.append(f"    {r.error}")
    lines.append(f"caught {len(result.caught)} of {len(result.bugs)} defects "
                 f"({100 * result.rate:.0f}%; {len(result.rows) - len(result.bugs)} AMBIG "
                 f"behaviour(s) not counted, {len(result.false_alarms)} reported) in "
                 f"{result.seconds:.0f} s with {result.workers} worker(s); "
                 f"{result.executions_per_s:.0f} requests/s executed and checked")
    return "\n".join(lines)
