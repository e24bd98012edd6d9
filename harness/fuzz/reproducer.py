"""Findings as files: a standalone pytest reproducer per finding (it rebuilds the world
with the same backend spec and replays the exact request sequence, judged by the same
oracles) and ``findings.json`` (oracle, clauses, the shortest sequence as hex)."""

from __future__ import annotations

import argparse
import ast
import json
import os
import pprint
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.world.options import (
    WORLD_OPTIONS,
    add_world_options,
    option_args,
    world_from_options,
)
from harness.world.spec import WorldSpec

from .driver import DriverConfig, Found, FuzzDriver, Step
from .oracles import ORACLES, FuzzFinding, Problem


def world_from_cli(world: Sequence[str]) -> WorldSpec:
    """The world of a run from its world options in command-line form (as
    :func:`harness.world.options.option_args` gives them)."""
    parser = argparse.ArgumentParser(prog="replay", add_help=False)
    add_world_options(parser.add_argument)
    # on a real Xen host (fuzz --platform real): the harness in dom0 is the frontend
    parser.add_argument("--platform", choices=("sim", "real"), default="sim")
    parser.add_argument("--frontend-domid", type=int, default=None)
    ns = parser.parse_args(list(world))
    more: dict[str, object] = {"platform": ns.platform}
    if ns.frontend_domid is not None:
        more["frontend_domid"] = ns.frontend_domid
    return world_from_options(lambda name: getattr(ns, name), **more)


def replay(world: Sequence[str], steps: Sequence[Step | Mapping[str, Any]], *, stream: str = "0/0",
           out: str | os.PathLike[str] | None = None,
           driver: Mapping[str, Any] | None = None) -> list[Problem]:
    """Rebuild the world (``world``: its options in command-line form),
    replay ``steps`` in one case with the invariants after each, and return the broken
    oracles (the first one, and the supervisor's verdict if it says more). A step is a
    :class:`Step` or its dict form (as a reproducer file holds it)."""
    from harness.runner.supervisor import SupervisorConfig, running_supervisor

    from .campaign import supervisor_config

    dcfg = DriverConfig(stream=stream, **(driver or {}))
    spec = world_from_cli(world)
    with tempfile.TemporaryDirectory(prefix="sndif-replay-") as tmp:
        cfg: SupervisorConfig = supervisor_config(spec, dcfg)
        with running_supervisor(out or tmp, cfg) as sup:
            drv = FuzzDriver(sup, dcfg)
            drv.begin("replay")
            problems: list[Problem] = []
            try:
                drv.check_invariants()
                for step in steps:
                    drv.execute(step if isinstance(step, Step) else Step.from_dict(dict(step)))
                    drv.check_invariants()
            except FuzzFinding as exc:
                problems.append(Problem.of(exc))
            late = drv.end()
            if late is not None and all(p.oracle != late.oracle for p in problems):
                problems.append(Problem.of(late))
            return problems


_TEMPLATE = '''"""Reproducer of a fuzz finding: {oracle} ({clauses}).

{detail}

A conformance case in the suites' format: it fails while the backend still has the bug and
passes once it is fixed. Run from the harness's repository root: ``pytest {name}``
(world options such as ``--backend`` replace the recorded world below), or
``sndif-harness replay {name} [--backend ...]``. It rebuilds the world and replays the
{n} request(s) below as raw bytes (an OPEN's buffer rebuilt as planned), judged by the
fuzzer's own oracles.
"""

import pytest

from harness.fuzz.reproducer import replay, world_of

ORACLE = {oracle!r}
CLAUSES = {clause_list!r}
WORLD = {world!r}
STREAM = {stream!r}
DRIVER = {driver!r}
STEPS = {steps}


@pytest.mark.clause(*CLAUSES)
@pytest.mark.world_options
def test_{ident}(request):
    """{what}"""
    problems = replay(world_of(request.config, WORLD), STEPS, stream=STREAM, driver=DRIVER)
    assert ORACLE not in [p.oracle for p in problems], problems
'''


@dataclass
class Reproducer:
    """What a reproducer file (or one finding of ``findings.json``) replays."""
    oracle: str
    clauses: list[str]
    world: list[str]
    stream: str
    driver: dict[str, Any]
    steps: list[Step]


class ReproducerError(Exception):
    """A file that is not a reproducer; the message names the file and what is wrong."""


def world_of(config: Any, recorded: Sequence[str]) -> list[str]:
    """The world a reproducer runs in under pytest: the world options given on pytest's
    command line when there are any (the harness's conftest defines them), else the one
    recorded when the finding was made."""
    flags = {flag for flag, _ in WORLD_OPTIONS}
    given = [a for a in config.invocation_params.args if a.split("=", 1)[0] in flags]
    if not given:
        return list(recorded)
    return option_args(lambda name: config.getoption(name, default=None))


def write_reproducer(path: Path, found: Found, world: Sequence[str], stream: str,
                     driver: Mapping[str, Any]) -> Path:
    p = found.problem
    text = _TEMPLATE.format(
        oracle=p.oracle, clauses=", ".join(p.clauses), clause_list=list(p.clauses),
        detail=p.detail.replace('"""', "'"), what=ORACLES[p.oracle].what,
        name=path.name, n=len(found.steps),
        world=list(world), stream=stream, driver=dict(driver),
        steps=pprint.pformat([s.as_dict() for s in found.steps], width=96, compact=True),
        ident=f"no_{p.oracle.replace('-', '_')}")
    path.write_text(text)
    return path


_LITERALS = ("ORACLE", "CLAUSES", "WORLD", "STREAM", "DRIVER", "STEPS")


def load_reproducers(path: Path) -> list[Reproducer]:
    """The reproducers of a generated ``test_repro_*.py`` (one) or of a ``findings.json``
    (every finding); read as literals, never executed."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReproducerError(f"{path}: cannot read it ({exc})") from None
    try:
        if path.suffix == ".json":
            doc = json.loads(text)
            return [Reproducer(f["oracle"], list(f["clauses"]), list(doc["world"]),
                               doc["stream"], dict(doc.get("driver", {})),
                               [Step.from_dict(s) for s in f["steps"]])
                    for f in doc["findings"]]
        found: dict[str, Any] = {}
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in _LITERALS:
                found[node.targets[0].id] = ast.literal_eval(node.value)
        missing = [n for n in _LITERALS if n not in found]
        if missing:
            raise ReproducerError(f"{path}: not a reproducer (no {', '.join(missing)})")
        return [Reproducer(found["ORACLE"], list(found["CLAUSES"]), list(found["WORLD"]),
                           found["STREAM"], dict(found["DRIVER"]),
                           [Step.from_dict(s) for s in found["STEPS"]])]
    except ReproducerError:
        raise
    except (ValueError, KeyError, TypeError, SyntaxError) as exc:
        raise ReproducerError(f"{path}: not a reproducer ({type(exc).__name__}: {exc})"
                              ) from None


def write_findings(out: Path, found: Mapping[str, Found], world: Sequence[str],
                   stream: str, driver: Mapping[str, Any], stats: Mapping[str, Any]
                   ) -> Path:
    """``out/test_repro_<oracle>.py`` per finding and ``out/findings.json``."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, f in sorted(found.items()):
        repro = write_reproducer(out / f"test_repro_{name.replace('-', '_')}.py", f, world,
                                 stream, driver)
        entries.append({**f.as_dict(), "reproducer": repro.name})
    summary = out / "findings.json"
    summary.write_text(json.dumps({"world": list(world), "stream": stream,
                                   "driver": dict(driver),
                                   "stats": dict(stats), "findings": entries},
                                  indent=2, default=str) + "\n")
    return summary
