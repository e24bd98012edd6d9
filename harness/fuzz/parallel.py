"""A fuzz campaign over ``workers`` processes (``sndif-harness fuzz -n WORKERS``): each
worker has its own world (backend, simulated Xen, frontend) and its seed offset
(``seed + i * SEED_STRIDE``), writes under ``out/worker-<i>``, and reports its counters
to the parent about twice a second; the parent prints the live progress (examples/s,
requests/s, unique failures, operations covered by stream state), merges the findings
deduplicated by oracle + clauses + operation of the last request (the shortest sequence
kept), writes them (reproducers, ``findings.json``) and the certification-format
``results.json`` under ``out``.

The example database (``--db DIR`` or ``--db redis://host:port``) is shared by every
worker: Hypothesis saves each failing example there and replays the saved ones first
(its ``reuse`` phase), so a failure one worker (or an earlier run) found is the first
thing the others try.

One worker runs in the calling process (no child, same result files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

from .campaign import Budget, Result, run_machine, run_requests_mode
from .driver import DriverConfig, Found, FuzzDriver, Step
from .oracles import ORACLES, Problem
from .reproducer import world_from_cli, write_findings
from .results import write_results

SEED_STRIDE = 1_000_003
PROGRESS_EVERY = 0.5  # seconds between two reports of a worker


class DatabaseError(ValueError):
    """A ``--db`` value that names no usable database (one line, a usage error)."""


def open_database(spec: str | None) -> ExampleDatabase | None:
    """``redis://host:port[/db]`` → Hypothesis' RedisExampleDatabase (the ``redis``
    package); anything else is a directory (DirectoryBasedExampleDatabase); None → no
    database."""
    if not spec:
        return None
    if spec.startswith("redis://"):
        u = urlparse(spec)
        if not u.hostname:
            raise DatabaseError(f"--db {spec}: no host")
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError as exc:
            raise DatabaseError(f"--db {spec}: needs the redis package ({exc})") from None
        db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() else 0
        client = redis.Redis(host=u.hostname, port=u.port or 6379, db=db,
                             socket_timeout=5, socket_connect_timeout=5)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise DatabaseError(f"--db {spec}: {exc}") from None
        return RedisExampleDatabase(client)
    if "://" in spec:
        raise DatabaseError(f"--db {spec}: only directories and redis:// are supported")
    path = Path(spec)
    if path.exists() and not path.is_dir():
        raise DatabaseError(f"--db {spec}: exists and is not a directory")
    return DirectoryBasedExampleDatabase(str(path))


def database_key(world: Sequence[str], stream: str, mode: str,
                 groups: Iterable[str] | None) -> bytes:
    """What the saved examples of a campaign are filed under: the same world, stream and
    rules replay each other's failures, others do not."""
    text = json.dumps([list(world), stream, mode, sorted(groups or [])])
    return hashlib.sha256(text.encode()).digest()[:16]


@dataclass
class Snapshot:
    """One worker's counters."""

    worker: int
    examples: int = 0
    requests: int = 0
    malformed: int = 0
    found: list[str] = field(default_factory=list)
    coverage: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    done: bool = False
    error: str | None = None
    first_steps: list[list[dict[str, Any]]] = field(default_factory=list)
    #: per oracle, the example (1, 2, ...) of this worker that first broke it
    first_example: dict[str, int] = field(default_factory=dict)
    edges: int | None = None  # an instrumented backend's edges this worker reached


@dataclass
class CampaignResult:
    found: dict[str, Found]
    workers: list[Snapshot]
    seconds: float
    summary: Path | None = None
    results: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return sum(w.examples for w in self.workers)

    @property
    def requests(self) -> int:
        return sum(w.requests for w in self.workers)

    @property
    def malformed(self) -> int:
        return sum(w.malformed for w in self.workers)

    @property
    def coverage(self) -> dict[str, int]:
        return merge_coverage(w.coverage for w in self.workers)

    @property
    def edges(self) -> int | None:
        """An instrumented backend's edges: the most one worker reached."""
        counts = [w.edges for w in self.workers if w.edges is not None]
        return max(counts) if counts else None

    def stats(self) -> dict[str, Any]:
        s = max(self.seconds, 1e-3)
        return {"workers": len(self.workers), "examples": self.examples,
                "requests": self.requests, "malformed": self.malformed,
                "seconds": round(self.seconds, 2),
                "examples_per_s": round(self.examples / s, 1),
                "requests_per_s": round(self.requests / s, 1),
                "malformed_per_s": round(self.malformed / s, 1),
                "coverage": self.coverage, "edges": self.edges}


def merge_coverage(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def _snapshot(i: int, drv: FuzzDriver, elapsed: float) -> Snapshot:
    c = drv.counters
    return Snapshot(i, c.examples, c.requests, c.malformed, sorted(drv.found),
                    dict(c.coverage), elapsed)


def _work(i: int, world: list[str], out: str, budget: Budget, dcfg: DriverConfig,
          mode: str, groups: list[str] | None, db: str | None,
          report: Callable[[Snapshot], None], feedback: bool = False) -> None:
    """One worker's campaign; ``report`` gets its counters as it goes and at the end."""
    spec = world_from_cli(world)
    b = dataclasses.replace(budget, seed=budget.seed + i * SEED_STRIDE)
    last = [0.0]
    drivers: list[FuzzDriver] = []

    def progress(drv: FuzzDriver, elapsed: float) -> None:
        if not drivers:
            drivers.append(drv)
        if elapsed - last[0] >= PROGRESS_EVERY:
            last[0] = elapsed
            report(_snapshot(i, drv, elapsed))

    t0 = time.monotonic()
    result: Result
    if mode == "requests":
        result = run_requests_mode(spec, world, Path(out), b, dcfg, progress)
    else:
        result = run_machine(spec, world, Path(out), b, dcfg, progress, groups=groups,
                             database=open_database(db),
                             database_key=database_key(world, dcfg.stream, mode, groups),
                             feedback=feedback)
    snap = Snapshot(i, result.examples, result.requests, result.malformed,
                    sorted(result.found), dict(result.coverage),
                    time.monotonic() - t0, done=True,
                    first_steps=[[s.as_dict() for s in steps]
                                 for _, steps in sorted(result.first_steps.items(),
                                                        key=lambda kv: result.first_seconds
                                                        .get(kv[0], 0))],
                    first_example=dict(result.first_example), edges=result.edges)
    report(snap)


def _child(i: int, world: list[str], out: str, budget: Budget, dcfg: DriverConfig,
           mode: str, groups: list[str] | None, db: str | None, q: Any,
           feedback: bool) -> None:
    # SIGTERM (the parent stopping us) ends the campaign through its context managers,
    # so the backend this worker runs is stopped too
    signal.signal(signal.SIGTERM, lambda n, f: (_ for _ in ()).throw(SystemExit(143)))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
    try:
        _work(i, world, out, budget, dcfg, mode, groups, db, q.put, feedback)
    except BaseException as exc:
        q.put(Snapshot(i, done=True, error=f"{type(exc).__name__}: {exc}"))
        raise


def run_campaign(world: Sequence[str], out: Path, budget: Budget, dcfg: DriverConfig, *,
                 workers: int = 1, mode: str = "machine",
                 groups: Iterable[str] | None = None, db: str | None = None,
                 progress: Callable[[list[Snapshot], float], None] | None = None,
                 feedback: bool = False) -> CampaignResult:
    """The campaign (see the module docstring)."""
    open_database(db)  # a bad --db is said before anything starts
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    glist = sorted(groups) if groups is not None else None
    snaps: dict[int, Snapshot] = {i: Snapshot(i) for i in range(workers)}

    def report(s: Snapshot) -> None:
        snaps[s.worker] = s
        if progress is not None:
            progress(list(snaps.values()), time.monotonic() - t0)

    if workers == 1:
        _work(0, list(world), str(out / "worker-0"), budget, dcfg, mode, glist, db, report,
              feedback)
    else:
        _run_children(world, out, budget, dcfg, workers, mode, glist, db, report, feedback)
    found = merge_findings(out, workers)
    result = CampaignResult(found, [snaps[i] for i in range(workers)],
                            time.monotonic() - t0)
    result.notes = [f"worker {s.worker}: {s.error}" for s in result.workers if s.error]
    driver_args = {"request_timeout": dcfg.request_timeout,
                   "probe_timeout": dcfg.probe_timeout, "leak_grace": dcfg.leak_grace}
    result.summary = write_findings(out, found, list(world), dcfg.stream, driver_args,
                                    result.stats())
    repros = {k: f"test_repro_{k.replace('-', '_')}.py" for k in found}
    result.results = write_results(out, found, list(world), result.stats(),
                                   started=started, reproducers=repros)
    return result


def _run_children(world: Sequence[str], out: Path, budget: Budget, dcfg: DriverConfig,
                  workers: int, mode: str, groups: list[str] | None, db: str | None,
                  report: Callable[[Snapshot], None], feedback: bool) -> None:
    ctx = multiprocessing.get_context("spawn")  # no threads or fds of ours inherited
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(i, list(world), str(out / f"worker-{i}"),
                                              budget, dcfg, mode, groups, db, q,
                                              feedback),
                         name=f"fuzz-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    # a worker that neither finishes nor dies: its budget, shrinking, a restart or two
    deadline = time.monotonic() + budget.seconds + budget.shrink_seconds + 120
    done: set[int] = set()
    try:
        while len(done) < workers and time.monotonic() < deadline:
            try:
                s = q.get(timeout=0.5)
            except queue_mod.Empty:
                for i, p in enumerate(procs):
                    if not p.is_alive() and i not in done:
                        # died without a last word (killed): say so, go on
                        done.add(i)
                        report(Snapshot(i, done=True,
                                        error=f"worker exited with {p.exitcode}"))
                continue
            report(s)
            if s.done:
                done.add(s.worker)
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        q.close()


def merge_findings(out: Path, workers: int) -> dict[str, Found]:
    """The workers' findings, one per oracle + clauses + operation of the last request
    (the shortest sequence), keyed by oracle (``oracle--op`` for a second operation)."""
    best: dict[tuple[str, tuple[str, ...], str], Found] = {}
    for i in range(workers):
        path = out / f"worker-{i}" / "findings.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for f in doc.get("findings", []):
            steps = [Step.from_dict(s) for s in f["steps"]]
            found = Found(Problem(f["oracle"], f["detail"], {}), steps, f["case"],
                          dict(f.get("evidence", {})))
            trace = found.evidence.get("trace")
            if trace:  # relative to the merged out dir
                found.evidence["trace"] = str(Path(trace))
            key = (f["oracle"], tuple(f["clauses"]), _last_op(steps))
            old = best.get(key)
            if old is None or found.size < old.size:
                best[key] = found
    merged: dict[str, Found] = {}
    for (oracle, _, op), f in sorted(best.items()):
        name = oracle if oracle not in merged else f"{oracle}--{op.lower()}"
        merged[name] = f
    assert all(f.problem.oracle in ORACLES for f in merged.values())
    return merged


def _last_op(steps: Sequence[Step]) -> str:
    for s in reversed(steps):
        if s.action is None and s.raw:
            return s.describe().split()[0]
        if s.action is not None:
            return s.action.split(":")[0]
    return "none"
