"""A fuzz campaign with a budget: the state machine run in batches of examples under one
supervisor until the examples or the seconds are spent (or a batch found something and
Hypothesis shrank it), a live count, and the findings written as reproducers.

Hypothesis has no time budget: examples run in batches sized to end near the deadline,
and shrinking past its own budget is cut short by skipping examples (``assume(False)``);
the findings are what the driver recorded (per oracle, the shortest failing sequence), not
what Hypothesis re-raises at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, assume, seed, settings
from hypothesis.errors import HypothesisException
from hypothesis.stateful import run_state_machine_as_test

from harness.runner.supervisor import SupervisorConfig, running_supervisor
from harness.world.spec import WorldSpec

from .driver import DriverConfig, Found, FuzzDriver
from .machine import machine_class
from .oracles import FuzzFinding
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


@dataclass
class Result:
    found: dict[str, Found]
    examples: int
    requests: int
    malformed: int
    seconds: float
    summary: Path | None = None
    notes: list[str] = field(default_factory=list)

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


Progress = Callable[[FuzzDriver, float], None]


def run_machine(spec: WorldSpec, world_args: Sequence[str], out: Path, budget: Budget,
                driver_config: DriverConfig | None = None,
                progress: Progress | None = None) -> Result:
    """Fuzz with the state machine; findings written under ``out`` (reproducers and
    ``findings.json``), the backend's log and case traces under ``out/backend``."""
    dcfg = driver_config or DriverConfig()
    t0 = time.monotonic()
    gen_deadline = t0 + budget.seconds
    notes: list[str] = []
    with running_supervisor(out / "backend", supervisor_config(spec, dcfg)) as sup:
        drv = FuzzDriver(sup, dcfg)
        hw = sup.dev.stream(dcfg.stream).config.hw
        base = machine_class(drv, hw)
        first_found: list[float] = []

        class Budgeted(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                now = time.monotonic()
                if drv.found and not first_found:
                    first_found.append(now)
                # shrinking past its budget: skip (Hypothesis may then call the run flaky;
                # the shortest sequence recorded is the finding either way)
                assume(not first_found or now <= first_found[0] + budget.shrink_seconds)
                if progress is not None:
                    progress(drv, now - t0)
                super().__init__()

        batch = 0
        while not drv.found and time.monotonic() < gen_deadline \
                and drv.counters.examples < budget.examples:
            # no skipping while generating (Hypothesis would call that flaky): batches
            # sized to end near the deadline, from the time an example has taken so far
            elapsed = time.monotonic() - t0
            per = elapsed / drv.counters.examples if drv.counters.examples else 0.5
            n = max(1, min(BATCH, budget.examples - drv.counters.examples,
                           int((gen_deadline - time.monotonic()) / max(per, 1e-3))))
            runner = seed(budget.seed + batch)(Budgeted)
            batch += 1
            try:
                run_state_machine_as_test(runner, settings=settings(
                    max_examples=n, stateful_step_count=budget.steps, deadline=None,
                    database=None, suppress_health_check=list(HealthCheck),
                    phases=[Phase.generate, Phase.shrink], report_multiple_bugs=True,
                    print_blob=False))
            except (FuzzFinding, ExceptionGroup):
                if not drv.found:  # raised by an oracle, so recorded: cannot happen
                    raise
            except HypothesisException as exc:
                # after a finding: shrinking cut short by its budget. Without one: the
                # backend answered the same requests differently (worth knowing)
                notes.append(f"Hypothesis: {type(exc).__name__}: "
                             + ("the shrinking budget cut it short; the shortest "
                                "sequence seen is kept" if drv.found else
                                str(exc).splitlines()[0]))
        result = Result(dict(drv.found), drv.counters.examples, drv.counters.requests,
                        drv.counters.malformed, time.monotonic() - t0, notes=notes)
    return _written(result, out, world_args, dcfg)


def run_requests_mode(spec: WorldSpec, world_args: Sequence[str], out: Path, budget: Budget,
                      driver_config: DriverConfig | None = None,
                      progress: Progress | None = None) -> Result:
    """The fast loop of :mod:`.requests_loop` (``--mode requests``): ``budget.examples``
    counts supervisor cases of one second each."""
    dcfg = driver_config or DriverConfig()
    t0 = time.monotonic()
    with running_supervisor(out / "backend", supervisor_config(spec, dcfg)) as sup:
        drv = FuzzDriver(sup, dcfg)
        run_requests(drv, LoopBudget(seconds=budget.seconds, seed=budget.seed,
                                     requests=budget.examples * 100_000), progress)
        result = Result(dict(drv.found), drv.counters.examples, drv.counters.requests,
                        drv.counters.malformed, time.monotonic() - t0)
    return _written(result, out, world_args, dcfg)


def _written(result: Result, out: Path, world_args: Sequence[str],
             dcfg: DriverConfig) -> Result:
    driver_args = {"request_timeout": dcfg.request_timeout,
                   "probe_timeout": dcfg.probe_timeout, "leak_grace": dcfg.leak_grace}
    result.summary = write_findings(out, result.found, world_args, dcfg.stream, driver_args,
                                    result.stats())
    return result
