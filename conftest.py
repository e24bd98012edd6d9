"""Root pytest configuration: options that choose the backend and platform under test, and
the fixtures a suite uses to run its cases against a supervised backend.

    pytest suites/ --backend reference --defect hang-on-hw-query
    pytest suites/ --backend exec:'./snd_be -v' --restart-policy every-case
    pytest suites/ --backend attach

Fixtures: ``backend_supervisor`` (session: one :class:`Supervisor` for the run) and
``backend_case`` (per case: marks the backend log, gives ``case.dev``, and after the case
checks the backend; a CRASH, HANG, or leaked resource fails the test with the verdict).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.world.options import add_world_options

# pytester: the harness's own tests run pytest inside pytest; the certification plugin
# judges clauses (it does nothing without --report-dir but check the clause markers)
pytest_plugins = ("pytester", "harness.certify.plugin")

_SPEC_KEY = pytest.StashKey[Any]()
_PROFILE_KEY = pytest.StashKey[Any]()
_PACING_KEY = pytest.StashKey[Any]()
_CASE_ATTR = "_sndif_case"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sndif-harness")
    group.addoption("--platform", default="sim", choices=("sim", "real"),
                    help="Xen platform: the simulated Xen (default) or a real Xen host")
    add_world_options(group.addoption)
    group.addoption("--backend-domid", type=int, default=0, metavar="N",
                    help="domain id of the backend (default 0)")
    group.addoption("--frontend-domid", type=int, default=None, metavar="N",
                    help="domain id of the frontend (default 1 on the sim; on a real Xen "
                         "host 0: the harness, its frontend and the backend run in dom0)")
    group.addoption("--restart-policy", default="on-failure",
                    choices=("on-failure", "every-case"),
                    help="restart the backend after a CRASH/HANG (default) or before every "
                         "case")
    group.addoption("--case-timeout", type=float, default=3.0, metavar="SECONDS",
                    help="hang detection: the frontend's request timeout and the longest "
                         "a ring may stall (default 3, Linux's 3000 ms)")
    group.addoption("--backend-out", default=None, metavar="DIR",
                    help="where the backend log and verdicts go (default: a temp dir)")
    group.addoption("--pacing-min-intervals", type=int, default=40, metavar="N",
                    help="position-event pacing is judged over at least N intervals")
    group.addoption("--pacing-band", default="0.75:1.5", metavar="LOW:HIGH",
                    help="the median event interval and position step may be LOW..HIGH "
                         "times the ideal (default 0.75:1.5)")
    group.addoption("--pacing-confidence", type=float, default=0.95, metavar="P",
                    help="confidence of the medians' intervals (default 0.95)")


def _own_domid() -> int:
    """This process's domain on a real Xen host (a usage error where there is none)."""
    from harness.xen.real.platform import own_domid

    try:
        return own_domid()
    except Exception as exc:  # no xenstored socket, no xenbus device, no answer
        raise pytest.UsageError(f"--platform real: no Xen here ({exc})") from None


def pytest_configure(config: pytest.Config) -> None:
    """Validate the backend options once, before any test runs: a bad value is a usage
    error naming the bad part, not a failure of every test."""
    from harness.world.options import world_from_options
    from harness.world.spec import WorldSpec, WorldSpecError

    defects = config.getoption("defect") or []
    t = float(config.getoption("case_timeout"))
    if t <= 0:
        raise pytest.UsageError("--case-timeout must be > 0")
    real = config.getoption("platform") == "real"
    fe_domid = config.getoption("frontend_domid")
    if config.getoption("backend_domid") < 0 or (fe_domid or 0) < 0:
        raise pytest.UsageError("--backend-domid and --frontend-domid must be >= 0")

    def spec_of(fe: int, toolstack: bool = True) -> WorldSpec:
        try:
            return world_from_options(config.getoption, platform=config.getoption("platform"),
                                      backend_domid=config.getoption("backend_domid"),
                                      frontend_domid=fe, toolstack=toolstack,
                                      request_timeout_ms=int(t * 1000))
        except WorldSpecError as exc:
            raise pytest.UsageError(str(exc)) from None

    # the options' own errors first: they need no Xen to be found
    spec = spec_of(fe_domid if fe_domid is not None else 0 if real else 1)
    if real:
        own = _own_domid()
        if fe_domid not in (None, own):
            raise pytest.UsageError(f"--platform real: the frontend is this process, in "
                                    f"domain {own} (--frontend-domid {own})")
        # in a guest (not dom0) the host's toolstack made the device: no rights to make it
        spec = spec_of(own, toolstack=own == 0)
    if defects:
        from harness.backends.reference.defects import Defects, UnknownDefect

        try:
            Defects.of(defects)
        except UnknownDefect as exc:
            raise pytest.UsageError(f"--defect: {exc}") from None
    config.stash[_SPEC_KEY] = spec
    config.stash[_PACING_KEY] = _pacing(config)
    from harness.certify.profile import Profile, ProfileError, load_profile

    path = config.getoption("profile", None)
    try:
        config.stash[_PROFILE_KEY] = load_profile(path) if path else Profile()
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None


#: Options that choose the backend under test: given to a run none of whose tests uses a
#: backend, they would be silently ignored, so they are a usage error instead.
_BACKEND_FLAGS = ("--backend", "--defect", "--restart-policy", "--vsnd", "--config",
                  "--audio", "--backend-env", "--unique-id", "--backend-domid",
                  "--frontend-domid")
#: Fixtures (and the marker, for tests that read the world options themselves, as fuzz
#: reproducers do) that make a test run against the backend the options choose.
_BACKEND_USERS = ("backend_supervisor", "backend_case")
WORLD_OPTIONS_MARK = "world_options"


def pytest_collection_finish(session: pytest.Session) -> None:
    given = sorted({a.split("=", 1)[0] for a in session.config.invocation_params.args
                    if isinstance(a, str) and a.split("=", 1)[0] in _BACKEND_FLAGS})
    if not given or not session.items:
        return
    if any(set(_BACKEND_USERS) & set(getattr(item, "fixturenames", ()))
           or item.get_closest_marker(WORLD_OPTIONS_MARK) for item in session.items):
        return
    raise pytest.UsageError(
        f"{', '.join(given)}: none of the {len(session.items)} selected test(s) runs "
        "against a backend, so the option would be ignored (the conformance suites under "
        "suites/ do; or use 'sndif-harness certify')")


def _pacing(config: pytest.Config) -> Any:
    from harness.judge.pacing import PacingTolerance

    n = config.getoption("pacing_min_intervals")
    if n < 10:
        raise pytest.UsageError(f"--pacing-min-intervals {n}: at least 10 intervals")
    text = config.getoption("pacing_band")
    try:
        low, high = (float(x) for x in text.split(":"))
    except ValueError:
        raise pytest.UsageError(f"--pacing-band {text!r}: expected LOW:HIGH, e.g. "
                                "0.75:1.5") from None
    if not 0 < low < 1 < high:
        raise pytest.UsageError(f"--pacing-band {text!r}: need 0 < LOW < 1 < HIGH")
    conf = config.getoption("pacing_confidence")
    if not 0.5 <= conf < 1:
        raise pytest.UsageError(f"--pacing-confidence {conf}: between 0.5 and 1")
    return PacingTolerance(min_intervals=n, interval_ratio=(low, high),
                           step_ratio=(low, high), confidence=conf)


@pytest.fixture(scope="session")
def pacing_tolerance(pytestconfig: pytest.Config) -> Any:
    """The :class:`~harness.judge.pacing.PacingTolerance` of the ``--pacing-*`` options."""
    return pytestconfig.stash[_PACING_KEY]


def supervisor_config(config: pytest.Config) -> Any:
    """The :class:`SupervisorConfig` the options describe."""
    from harness.runner.supervisor import SupervisorConfig

    t = float(config.getoption("case_timeout"))
    return SupervisorConfig(world=config.stash[_SPEC_KEY],
                            restart_policy=config.getoption("restart_policy"),
                            hang_timeout=t, probe_timeout=min(1.0, t))


@pytest.fixture(scope="session")
def backend_supervisor(pytestconfig: pytest.Config,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One supervised backend for the whole run (restarted as needed)."""
    from harness.runner.supervisor import running_supervisor

    out = pytestconfig.getoption("backend_out")
    out_dir = Path(out) if out else tmp_path_factory.mktemp("backend")
    with running_supervisor(out_dir, supervisor_config(pytestconfig)) as sup:
        yield sup


@pytest.fixture
def backend_case(backend_supervisor: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """This case against the supervised backend: ``case.dev`` is the connected frontend.
    The verdict is decided right after the test body (see ``pytest_runtest_call``)."""
    case = backend_supervisor.begin_case(request.node.nodeid)
    setattr(request.node, _CASE_ATTR, (backend_supervisor, case))
    yield case
    if case.verdict is None:  # the body never ran (another fixture failed)
        backend_supervisor.end_case(case, None)


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Any:
    """The backend's :class:`~harness.certify.profile.Profile` (``--profile``), or an
    empty one: every feature then is probed."""
    return pytestconfig.stash[_PROFILE_KEY]


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Any:
    """``observe(what, value)``: record what the case saw on an AMBIG point (an INFO
    verdict's evidence); see :mod:`harness.certify.outcomes`."""
    from harness.certify.outcomes import observe as _observe

    return lambda what, value: _observe(request.node, what, value)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Judge a ``backend_case`` test as soon as its body ends: a CRASH, HANG, ERROR or a
    resource finding fails it with the verdict (the body's own exception chained)."""
    from harness.runner.verdicts import BackendVerdictError, Outcome

    attached = getattr(item, _CASE_ATTR, None)
    if attached is None:
        return (yield)
    sup, case = attached
    outcome_exc = (pytest.skip.Exception, pytest.xfail.Exception)
    try:
        result = yield
    except outcome_exc as exc:  # skip/xfail: still check the backend
        verdict = sup.end_case(case, None)
        if verdict.outcome is not Outcome.PASS:
            raise BackendVerdictError(verdict) from exc
        raise
    except Exception as exc:
        verdict = sup.end_case(case, exc)
        if verdict.outcome is not Outcome.FAIL or verdict.findings or verdict.needs_restart:
            raise BackendVerdictError(verdict) from exc
        raise
    verdict = sup.end_case(case, None)
    if verdict.outcome is not Outcome.PASS:
        raise BackendVerdictError(verdict)
    return result

