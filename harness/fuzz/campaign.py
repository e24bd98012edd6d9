"""A fuzz campaign with a budget: the state machine run in batches of examples under one
supervisor until the examples or the seconds are spent (or a batch found something and
Hypothesis shrank it), a live count, and the findings written as reproducers.

Hypothesis has no time budget: examples run in batches sized to end near the deadline,
and shrinking past its own budget is cut short by skipping examples (``assume(False)``);
the findings are what the driver recorded (per oracle, the shortest failing sequence), not
what Hypothesis re-raises at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, assume, seed, settings
from hypothesis.database import ExampleDatabase
from hypothesis.errors import HypothesisException
from hypothesis.stateful import get_state_machine_test

from harness.runner.supervisor import SupervisorConfig, running_supervisor
from harness.world.spec import WorldSpec
from harness.world.world import BackendStartError

from .driver import DriverConfig, Found, FuzzDriver, Step
from .machine import machine_class
from .oracles import FuzzFinding, Problem
from .reproducer import write_findings
from .requests_loop import LoopBudget, run_requests

BATCH = 50  # examples per Hypothesis run (between two budget checks)


def supervisor_config(spec: WorldSpec, driver: DriverConfig) -> SupervisorConfig:
    """The supervisor of a fuzz run: the frontend's timeout and the hang probe follow the
    driver's (short) request timeout, so a hang costs a second, not Linux's three."""
    ms = max(100, int(driver.request_timeout * 1000))
    return SupervisorConfig(spec.replace(request_timeout_ms=ms),
                            probe_timeout=driver.probe_timeout,
                            hang_timeout=max(1.0, 2 * driver.request_timeout),
                            leak_grace=driver.leak_grace)


@dataclass
class Budget:
    examples: int = 200
    seconds: float = 60.0
    shrink_seconds: float = 20.0
    steps: int = 20  # rules per example at most (Hypothesis' stateful_step_count)
    seed: int = 0
    #: stop at the first finding (a catalogue catch, a test); a campaign goes on to its
    #: budget for more unique failures, a new batch (and seed) after each one
    stop_at_first: bool = True


@dataclass
class Result:
    found: dict[str, Found]
    examples: int
    requests: int
    malformed: int
    seconds: float
    summary: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: per oracle, seconds from the campaign's start to its first finding
    first_seconds: dict[str, float] = field(default_factory=dict)
    #: per oracle, the first failing sequence as generated (what a seed reproduces)
    first_steps: dict[str, list[Step]] = field(default_factory=dict)
    #: edges an instrumented backend reached (None: not instrumented)
    edges: int | None = None
    #: per oracle, the example (1, 2, ...) that first broke it
    first_example: dict[str, int] = field(default_factory=dict)
    #: requests per "<stream state>:<operation>"
    coverage: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def malformed_rate(self) -> float:
        return self.malformed / self.seconds if self.seconds > 0 else 0.0

    def stats(self) -> dict[str, Any]:
        return {"examples": self.examples, "requests": self.requests,
                "malformed": self.malformed, "seconds": round(self.seconds, 2),
                "requests_per_s": round(self.rate, 1),
                "malformed_per_s": round(self.malformed_rate, 1)}

    @property
    def first(self) -> str | None:
        """The oracle that broke first."""
        return min(self.first_seconds, key=self.first_seconds.__getitem__, default=None)


def _result(drv: FuzzDriver, t0: float, notes: list[str] | None = None) -> Result:
    return Result(dict(drv.found), drv.counters.examples, drv.counters.requests,
                  drv.counters.malformed, time.monotonic() - t0, notes=notes or [],
                  first_seconds={k: round(v - t0, 2) for k, v in drv.first_at.items()},
                  first_steps={k: list(v) for k, v in drv.first_steps.items()},
                  first_example=dict(drv.first_example),
                  coverage=dict(sorted(drv.counters.coverage.items())))


@contextlib.contextmanager
def _supervised(spec: WorldSpec, out: Path, dcfg: DriverConfig, t0: float
                ) -> Iterator[FuzzDriver | Result]:
    """A driver over a started supervisor; when the world does not even start (the
    device never reaches InitWait, the frontend cannot connect) a Result holding that
    one ``connect`` finding instead."""
    try:
        ctx = running_supervisor(out / "backend", supervisor_config(spec, dcfg))
        sup = ctx.__enter__()
    except BackendStartError as exc:
        found = Found(Problem("connect", str(exc).splitlines()[0]), [], "fuzz::start",
                      {"log": _log_tail(out / "backend" / "backend.log")})
        yield Result({"connect": found}, 0, 0, 0, time.monotonic() - t0,
                     first_seconds={"connect": round(time.monotonic() - t0, 2)})
        return
    try:
        yield FuzzDriver(sup, dcfg)
    except BaseException:
        if not ctx.__exit__(*sys.exc_info()):
            raise
    else:
        ctx.__exit__(None, None, None)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


Progress = Callable[[FuzzDriver, float], None]


def run_machine(spec: WorldSpec, world_args: Sequence[str], out: Path, budget: Budget,
                driver_config: DriverConfig | None = None,
                progress: Progress | None = None, *, groups: Iterable[str] | None = None,
                database: ExampleDatabase | None = None,
                database_key: bytes | None = None, feedback: bool = False) -> Result:
    """Fuzz with the state machine; findings written under ``out`` (reproducers and
    ``findings.json``), the backend's log and case traces under ``out/backend``."""
    dcfg = driver_config or DriverConfig()
    t0 = time.monotonic()
    gen_deadline = t0 + budget.seconds
    hard_deadline = gen_deadline + max(2.0, 0.1 * budget.seconds)
    notes: list[str] = []
    with _supervised(spec, out, dcfg, t0) as drv:
        if isinstance(drv, Result):
            return _written(drv, out, world_args, dcfg)
        fd: FuzzDriver = drv  # (narrowed for the class below)
        from .coverage import EdgeCoverage

        cov = drv.edge_coverage = EdgeCoverage(drv.sup)
        drv.feedback = feedback
        hw = drv.sup.dev.stream(dcfg.stream).config.hw
        base = machine_class(drv, hw, groups=groups)
        first_found: list[float] = []  # when this batch first failed
        failures_before = [0]
        known_before: set[str] = set()  # oracles found in earlier batches

        class Budgeted(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                now = time.monotonic()
                if fd.failures > failures_before[0] and not first_found:
                    first_found.append(now)
                # shrinking past its budget: skip (Hypothesis may then call the run flaky;
                # the shortest sequence recorded is the finding either way)
                # (a bug an earlier batch found and shrank already: no second shrinking)
                limit = 0.0 if fd.last_oracle in known_before else budget.shrink_seconds
                assume(not first_found or now <= first_found[0] + limit)
                # examples far slower than the batch was sized for (a loaded machine):
                # the rest of the batch is skipped rather than the budget overrun
                assume(first_found or now <= hard_deadline)
                if progress is not None:
                    progress(fd, now - t0)
                super().__init__()

        batch = 0
        while (not drv.found or not budget.stop_at_first) \
                and time.monotonic() < gen_deadline \
                and drv.counters.examples < budget.examples:
            first_found.clear()
            failures_before[0] = drv.failures
            known_before.clear()
            known_before.update(drv.found)
            # no skipping while generating (Hypothesis would call that flaky): batches
            # sized to end near the deadline, from the time an example has taken so far
            elapsed = time.monotonic() - t0
            per = elapsed / drv.counters.examples if drv.counters.examples else 0.5
            n = max(1, min(BATCH, budget.examples - drv.counters.examples,
                           int((gen_deadline - time.monotonic()) / max(per, 1e-3))))
            runner = seed(budget.seed + batch)(Budgeted)
            batch += 1
            test = get_state_machine_test(runner, settings=settings(
                max_examples=n, stateful_step_count=budget.steps, deadline=None,
                database=database, suppress_health_check=list(HealthCheck),
                phases=[Phase.reuse, Phase.generate, Phase.shrink],
                report_multiple_bugs=True, print_blob=False))
            if database_key is not None:
                # saved examples filed under the campaign's world, not under our class
                test.hypothesis.inner_test._hypothesis_internal_add_digest = database_key  # type: ignore[attr-defined]
            try:
                test()
            except (FuzzFinding, ExceptionGroup, BackendStartError):
                if not drv.found:  # raised by an oracle, so recorded: cannot happen
                    raise
            except HypothesisException as exc:
                # after a finding: shrinking cut short by its budget. Without one: the
                # backend answered the same requests differently (worth knowing)
                if not drv.found and time.monotonic() > hard_deadline:
                    continue  # the skipping above, past the budget: nothing to say
                notes.append(f"Hypothesis: {type(exc).__name__}: "
                             + ("the shrinking budget cut it short; the shortest "
                                "sequence seen is kept" if drv.found else
                                str(exc).splitlines()[0]))
        result = _result(drv, t0, notes)
        cov.close()
        result.edges = cov.count if cov.count else None
    return _written(result, out, world_args, dcfg)


def run_requests_mode(spec: WorldSpec, world_args: Sequence[str], out: Path, budget: Budget,
                      driver_config: DriverConfig | None = None,
                      progress: Progress | None = None) -> Result:
    """The fast loop of :mod:`.requests_loop` (``--mode requests``): ``budget.examples``
    counts supervisor cases of one second each."""
    dcfg = driver_config or DriverConfig()
    t0 = time.monotonic()
    with _supervised(spec, out, dcfg, t0) as drv:
        if isinstance(drv, Result):
            return _written(drv, out, world_args, dcfg)
        try:
            run_requests(drv, LoopBudget(seconds=budget.seconds, seed=budget.seed,
                                         requests=budget.examples * 100_000), progress)
        except BackendStartError:
            if not drv.found:
                raise
        result = _result(drv, t0)
    return _written(result, out, world_args, dcfg)


def _written(result: Result, out: Path, world_args: Sequence[str],
             dcfg: DriverConfig) -> Result:
    driver_args = {"request_timeout": dcfg.request_timeout,
                   "probe_timeout": dcfg.probe_timeout, "leak_grace": dcfg.leak_grace}
    result.summary = write_findings(out, result.found, world_args, dcfg.stream, driver_args,
                                    result.stats())
    return result
