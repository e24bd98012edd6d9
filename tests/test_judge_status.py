"""Status judgement (harness.judge.status): 0 and -XEN_Exx pass; positive values, host
error codes and Xen-internal codes are named as what they are."""

from __future__ import annotations

import pytest

from harness.judge.status import StatusClass, classify, failure_problem, status_problem
from protocol_models.constants import XEN_INTERNAL_ERRNOS, XenErrno


@pytest.mark.parametrize(("status", "kind"), [
    (0, StatusClass.OK),
    (-22, StatusClass.XEN_ERROR),  # -EINVAL
    (-38, StatusClass.XEN_ERROR),  # -ENOSYS
    (22, StatusClass.POSITIVE),
    (-524, StatusClass.NOT_XEN_ERRNO),  # Linux's ENOTSUPP leaking through
    (-15, StatusClass.NOT_XEN_ERRNO),  # ENOTBLK: Linux has it, Xen does not
    (-4, StatusClass.XEN_INTERNAL),  # EINTR
    (-85, StatusClass.XEN_INTERNAL),  # ERESTART
])
def test_classify(status, kind):
    assert classify(status) is kind


def test_every_guest_visible_xen_errno_is_a_proper_failure():
    for e in XenErrno:
        expected = None if e not in XEN_INTERNAL_ERRNOS else status_problem(-e)
        assert failure_problem(-int(e)) == expected
        assert (status_problem(-int(e)) is None) == (e not in XEN_INTERNAL_ERRNOS)


def test_problems_name_the_status():
    assert status_problem(0) is None
    assert "9" in status_problem(9) and "positive" in status_problem(9)
    assert "-524" in status_problem(-524) and "not a Xen errno" in status_problem(-524)
    assert failure_problem(0) == "status 0 (success)"
    assert "-EINTR" in failure_problem(-4)
