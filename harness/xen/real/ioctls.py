"""ioctl numbers and structures of Linux's ``include/uapi/xen/{gntalloc,gntdev,evtchn}.h``.

Numbers come from the ``_IOC`` macro exactly as the headers compute them (all three devices
use ``_IOC_NONE`` with the structure size); structures are ctypes mirrors. A test compiles a
C program against the installed headers and compares every number, size and offset.
"""

from __future__ import annotations

import ctypes

# asm-generic/ioctl.h
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(dir: int, type: str, nr: int, size: int) -> int:
    return ((dir << _IOC_DIRSHIFT) | (ord(type) << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


u16, u32, u64 = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

# ---------------------------------------------------------------------- gntalloc.h


class ioctl_gntalloc_alloc_gref(ctypes.Structure):
    _fields_ = [("domid", u16), ("flags", u16), ("count", u32), ("index", u64),
                ("gref_ids", u32 * 1)]


class ioctl_gntalloc_dealloc_gref(ctypes.Structure):
    _fields_ = [("index", u64), ("count", u32)]


class ioctl_gntalloc_unmap_notify(ctypes.Structure):
    _fields_ = [("index", u64), ("action", u32), ("event_channel_port", u32)]


GNTALLOC_FLAG_WRITABLE = 1
UNMAP_NOTIFY_CLEAR_BYTE = 0x1
UNMAP_NOTIFY_SEND_EVENT = 0x2
IOCTL_GNTALLOC_ALLOC_GREF = _IOC(_IOC_NONE, "G", 5, ctypes.sizeof(ioctl_gntalloc_alloc_gref))
IOCTL_GNTALLOC_DEALLOC_GREF = _IOC(_IOC_NONE, "G", 6,
                                   ctypes.sizeof(ioctl_gntalloc_dealloc_gref))
IOCTL_GNTALLOC_SET_UNMAP_NOTIFY = _IOC(_IOC_NONE, "G", 7,
                                       ctypes.sizeof(ioctl_gntalloc_unmap_notify))


def gntalloc_alloc_gref(count: int) -> ctypes.Structure:
    """The variable-size ALLOC_GREF argument with room for ``count`` grant refs."""
    class _Alloc(ctypes.Structure):
        _fields_ = [("domid", u16), ("flags", u16), ("count", u32), ("index", u64),
                    ("gref_ids", u32 * max(count, 1))]
    arg = _Alloc()
    arg.count = count
    return arg

# ------------------------------------------------------------------------ gntdev.h


class ioctl_gntdev_grant_ref(ctypes.Structure):
    _fields_ = [("domid", u32), ("ref", u32)]


class ioctl_gntdev_map_grant_ref(ctypes.Structure):
    _fields_ = [("count", u32), ("pad", u32), ("index", u64),
                ("refs", ioctl_gntdev_grant_ref * 1)]


class ioctl_gntdev_unmap_grant_ref(ctypes.Structure):
    _fields_ = [("index", u64), ("count", u32), ("pad", u32)]


class ioctl_gntdev_set_max_grants(ctypes.Structure):
    _fields_ = [("count", u32)]


class ioctl_gntdev_unmap_notify(ctypes.Structure):
    _fields_ = [("index", u64), ("action", u32), ("event_channel_port", u32)]


IOCTL_GNTDEV_MAP_GRANT_REF = _IOC(_IOC_NONE, "G", 0, ctypes.sizeof(ioctl_gntdev_map_grant_ref))
IOCTL_GNTDEV_UNMAP_GRANT_REF = _IOC(_IOC_NONE, "G", 1,
                                    ctypes.sizeof(ioctl_gntdev_unmap_grant_ref))
IOCTL_GNTDEV_SET_MAX_GRANTS = _IOC(_IOC_NONE, "G", 3,
                                   ctypes.sizeof(ioctl_gntdev_set_max_grants))
IOCTL_GNTDEV_SET_UNMAP_NOTIFY = _IOC(_IOC_NONE, "G", 7,
                                     ctypes.sizeof(ioctl_gntdev_unmap_notify))


def gntdev_map_grant_ref(domid: int, refs: list[int]) -> ctypes.Structure:
    """The variable-size MAP_GRANT_REF argument for ``refs`` of ``domid``."""
    class _Map(ctypes.Structure):
        _fields_ = [("count", u32), ("pad", u32), ("index", u64),
                    ("refs", ioctl_gntdev_grant_ref * max(len(refs), 1))]
    arg = _Map()
    arg.count = len(refs)
    for i, ref in enumerate(refs):
        arg.refs[i].domid = domid
        arg.refs[i].ref = ref
    return arg

# ------------------------------------------------------------------------ evtchn.h


class ioctl_evtchn_bind_interdomain(ctypes.Structure):
    _fields_ = [("remote_domain", ctypes.c_uint), ("remote_port", ctypes.c_uint)]


class ioctl_evtchn_bind_unbound_port(ctypes.Structure):
    _fields_ = [("remote_domain", ctypes.c_uint)]


class ioctl_evtchn_unbind(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint)]


class ioctl_evtchn_notify(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint)]


IOCTL_EVTCHN_BIND_INTERDOMAIN = _IOC(_IOC_NONE, "E", 1,
                                     ctypes.sizeof(ioctl_evtchn_bind_interdomain))
IOCTL_EVTCHN_BIND_UNBOUND_PORT = _IOC(_IOC_NONE, "E", 2,
                                      ctypes.sizeof(ioctl_evtchn_bind_unbound_port))
IOCTL_EVTCHN_UNBIND = _IOC(_IOC_NONE, "E", 3, ctypes.sizeof(ioctl_evtchn_unbind))
IOCTL_EVTCHN_NOTIFY = _IOC(_IOC_NONE, "E", 4, ctypes.sizeof(ioctl_evtchn_notify))
IOCTL_EVTCHN_RESET = _IOC(_IOC_NONE, "E", 5, 0)

# name -> (number, structure or None) for the header comparison test
IOCTLS: dict[str, tuple[int, type[ctypes.Structure] | None]] = {
    "IOCTL_GNTALLOC_ALLOC_GREF": (IOCTL_GNTALLOC_ALLOC_GREF, ioctl_gntalloc_alloc_gref),
    "IOCTL_GNTALLOC_DEALLOC_GREF": (IOCTL_GNTALLOC_DEALLOC_GREF, ioctl_gntalloc_dealloc_gref),
    "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY": (IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
                                        ioctl_gntalloc_unmap_notify),
    "IOCTL_GNTDEV_MAP_GRANT_REF": (IOCTL_GNTDEV_MAP_GRANT_REF, ioctl_gntdev_map_grant_ref),
    "IOCTL_GNTDEV_UNMAP_GRANT_REF": (IOCTL_GNTDEV_UNMAP_GRANT_REF,
                                     ioctl_gntdev_unmap_grant_ref),
    "IOCTL_GNTDEV_SET_MAX_GRANTS": (IOCTL_GNTDEV_SET_MAX_GRANTS, ioctl_gntdev_set_max_grants),
    "IOCTL_GNTDEV_SET_UNMAP_NOTIFY": (IOCTL_GNTDEV_SET_UNMAP_NOTIFY, ioctl_gntdev_unmap_notify),
    "IOCTL_EVTCHN_BIND_INTERDOMAIN": (IOCTL_EVTCHN_BIND_INTERDOMAIN,
                                      ioctl_evtchn_bind_interdomain),
    "IOCTL_EVTCHN_BIND_UNBOUND_PORT": (IOCTL_EVTCHN_BIND_UNBOUND_PORT,
                                       ioctl_evtchn_bind_unbound_port),
    "IOCTL_EVTCHN_UNBIND": (IOCTL_EVTCHN_UNBIND, ioctl_evtchn_unbind),
    "IOCTL_EVTCHN_NOTIFY": (IOCTL_EVTCHN_NOTIFY, ioctl_evtchn_notify),
    "IOCTL_EVTCHN_RESET": (IOCTL_EVTCHN_RESET, None),
}
