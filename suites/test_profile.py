"""The backend's profile (``--profile``) against its behaviour: every optional feature is
probed; a feature the profile declares present that does not work, or declares absent
that works, FAILs citing the clause the declaration puts in force. Without a profile
(or for a feature it leaves out) the probe's finding is recorded, not judged.

Not tested here: the AMBIG choices of ``[ambiguities]`` (the area suites observe each
AMBIG point; the declared text is copied into the report).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.certify.outcomes import not_applicable
from harness.certify.profile import FEATURES
from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import FrontendError
from harness.frontend.open_params import choose_open_params
from harness.frontend.stream import FrontendStream
from protocol_models.constants import PcmFormat


def _params(stream: FrontendStream) -> tuple[int, PcmFormat, int, int, int]:
    p = choose_open_params(stream.config.hw, buffer_bytes=4096, periods=4)
    if p is None:
        not_applicable(f"stream {stream.path}: no fixed-width configuration fits")
    return p.args()


def _stream(dev: FrontendDevice, kind: str) -> FrontendStream | None:
    return next((s for s in dev.streams if s.type == kind), None)


def _opened(dev: FrontendDevice, kind: str = "p") -> FrontendStream:
    s = _stream(dev, kind)
    if s is None:
        not_applicable(f"the card has no {'capture' if kind == 'c' else 'playback'} stream")
    rate, fmt, ch, buf, period = _params(s)
    resp = s.open(rate, fmt, ch, buf, period)
    assert resp.ok, f"OPEN {rate} Hz {fmt.name} {ch} ch answered {resp.status}"
    return s


def _running(dev: FrontendDevice, kind: str = "p") -> FrontendStream:
    s = _opened(dev, kind)
    if kind == "p":
        assert s.write(0, bytes(_params(s)[3])).ok  # the whole buffer, silence
    assert s.trigger("start").ok
    return s


def probe_capture(dev: FrontendDevice) -> bool:
    s = _running(dev, "c")
    try:
        period = _params(s)[4]
        return s.wait_for(lambda: (s.position or 0) >= period, 2.0) and s.read(0, period).ok
    finally:
        s.trigger("stop")
        s.close()


def probe_volume(dev: FrontendDevice) -> bool:
    s = _opened(dev)
    try:
        ch = _params(s)[2]
        return s.set_volume([0] * ch).ok and s.get_volume(ch).ok
    finally:
        s.close()


def probe_mute(dev: FrontendDevice) -> bool:
    s = _opened(dev)
    try:
        ch = _params(s)[2]
        return s.mute([1] * ch).ok and s.unmute([1] * ch).ok
    finally:
        s.close()


def probe_pause_resume(dev: FrontendDevice) -> bool:
    s = _running(dev)
    try:
        return s.trigger("pause").ok and s.trigger("resume").ok
    finally:
        s.trigger("stop")
        s.close()


def probe_position_events(dev: FrontendDevice) -> bool:
    s = _running(dev)
    try:
        before = len(s.events)
        return s.wait_for(lambda: len(s.events) > before, 2.0)
    finally:
        s.trigger("stop")
        s.close()


def probe_hw_param_query(dev: FrontendDevice) -> bool:
    s = _stream(dev, "p") or _stream(dev, "c")
    if s is None:
        not_applicable("the card has no stream")
    return s.hw_param_query().ok


PROBES: dict[str, Callable[[FrontendDevice], bool]] = {
    "capture": probe_capture, "volume": probe_volume, "mute": probe_mute,
    "pause_resume": probe_pause_resume, "position_events": probe_position_events,
    "hw_param_query": probe_hw_param_query,
}


@pytest.mark.parametrize("feature", [
    pytest.param(f, marks=pytest.mark.clause(FEATURES[f][1]), id=f) for f in FEATURES])
def test_declared_feature_matches_behaviour(feature: str, backend_case: Any, profile: Any,
                                            observe: Any) -> None:
    """A feature the profile declares must work as declared (and one declared absent must
    be refused); without a declaration, what the backend does is recorded."""
    try:
        works = PROBES[feature](backend_case.dev)
    except (AssertionError, FrontendError) as exc:
        works, why = False, str(exc)
    else:
        why = ""
    observe(f"feature {feature} ({FEATURES[feature][0]})", works)
    declared = profile.declares(feature)
    if declared is None:
        return
    assert declared == works, (
        f"profile {profile.path} declares {feature} = {str(declared).lower()}, but the "
        f"backend {'does' if works else 'does not'}: {FEATURES[feature][0]}"
        + (f" ({why})" if why else ""))
