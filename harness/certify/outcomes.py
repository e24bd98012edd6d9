"""What a suite case can say besides pass and fail: the contract between the suites and the
certification plugin that turns pytest outcomes into verdicts.

* a failing ``assert`` is FAIL, or NONSTRICT when every clause the case cites is a SHOULD;
* :func:`not_applicable` (an optional feature the backend does not offer) is N/A;
* :func:`inconclusive` (the harness or the environment failed, not the backend) is
  INCONCLUSIVE;
* :func:`observe` records what was seen on an AMBIG point: reported as INFO, never judged;
* a CRASH or HANG comes from the backend supervisor, not from the case.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

from harness.runner.verdicts import NA_PREFIX

#: The ``user_properties`` key under which observations are stored.
OBSERVED = "sndif-observed"


class Inconclusive(Exception):
    """The harness or the environment failed; the backend is not to blame."""


#: Why a case that removes and creates the device cannot run where the harness is a guest.
NO_TOOLSTACK = ("needs the toolstack's rights (dom0: removing and creating the device); "
                "the harness runs in a guest")


def not_applicable(reason: str) -> NoReturn:
    """End the case as N/A: ``reason`` names the optional feature that is absent."""
    pytest.skip(NA_PREFIX + reason)


def inconclusive(reason: str) -> NoReturn:
    raise Inconclusive(reason)


def observe(node: pytest.Item, what: str, value: Any) -> None:
    """Record an observation (JSON-able ``value``) on the running case ``node``."""
    node.user_properties.append((OBSERVED, {"what": what, "value": value}))
