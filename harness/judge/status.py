"""Response status values (SND-G-01, G-05): 0 on success, ``-XEN_Exx`` on failure.

Derived from :mod:`protocol_models.constants` (the Xen errno table of clauses.md §1.4 and
its Xen-internal codes): a status whose negation is not in that table is a host error code
leaking through (e.g. Linux's ENOTSUPP 524), which a guest cannot interpret.
"""

from __future__ import annotations

import enum

from protocol_models.constants import XEN_INTERNAL_ERRNOS, XenErrno, status_name


class StatusClass(enum.Enum):
    OK = "0 (success)"
    XEN_ERROR = "-XEN_Exx"
    POSITIVE = "positive (undefined, SND-G-01)"
    NOT_XEN_ERRNO = "negative, but not a Xen errno (SND-G-01, §1.4)"
    XEN_INTERNAL = "a Xen-internal errno a guest never sees (§1.4, SND-G-05)"


def classify(status: int) -> StatusClass:
    if status == 0:
        return StatusClass.OK
    if status > 0:
        return StatusClass.POSITIVE
    try:
        errno = XenErrno(-status)
    except ValueError:
        return StatusClass.NOT_XEN_ERRNO
    return StatusClass.XEN_INTERNAL if errno in XEN_INTERNAL_ERRNOS else StatusClass.XEN_ERROR


def status_problem(status: int) -> str | None:
    """None when ``status`` is 0 or a ``-XEN_Exx`` a guest may see; else why not."""
    kind = classify(status)
    if kind in (StatusClass.OK, StatusClass.XEN_ERROR):
        return None
    return f"status {status_name(status)} is {kind.value}"


def failure_problem(status: int) -> str | None:
    """None when ``status`` is a proper failure (``-XEN_Exx``); else what it is."""
    if classify(status) is StatusClass.XEN_ERROR:
        return None
    if status == 0:
        return "status 0 (success)"
    return status_problem(status)
