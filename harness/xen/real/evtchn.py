"""Event channels on a real Xen host through ``/dev/xen/evtchn`` (``api.EventChannels``).

Reading the device yields the pending ports as u32 values; each delivered port is masked
until its number is written back, so :meth:`wait` unmasks what it returns.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import os
import select

from harness.xen.real import ioctls as I

DEVICE = "/dev/xen/evtchn"


class RealEventChannels:
    def __init__(self, device: str = DEVICE) -> None:
        self._fd = os.open(device, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        self._ports: set[int] = set()

    def _ioctl(self, request: int, arg: ctypes.Structure) -> int:
        # a writable buffer with mutate_flag=True: ioctl returns the int result (typeshed
        # cannot tell writable from read-only buffers, so it says Any)
        result: int = fcntl.ioctl(self._fd, request, arg, True)
        return result

    def alloc_unbound(self, remote_domid: int) -> int:
        port = self._ioctl(I.IOCTL_EVTCHN_BIND_UNBOUND_PORT,
                           I.ioctl_evtchn_bind_unbound_port(remote_domid))
        self._ports.add(port)
        return port

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        port = self._ioctl(I.IOCTL_EVTCHN_BIND_INTERDOMAIN,
                           I.ioctl_evtchn_bind_interdomain(remote_domid, remote_port))
        self._ports.add(port)
        return port

    def notify(self, port: int) -> None:
        self._ioctl(I.IOCTL_EVTCHN_NOTIFY, I.ioctl_evtchn_notify(port))

    def unbind(self, port: int) -> None:
        self._ioctl(I.IOCTL_EVTCHN_UNBIND, I.ioctl_evtchn_unbind(port))
        self._ports.discard(port)

    def reset(self) -> None:
        fcntl.ioctl(self._fd, I.IOCTL_EVTCHN_RESET, 0)

    def fileno(self) -> int:
        return self._fd

    def wait(self, timeout: float) -> list[int]:
        if not select.select([self._fd], [], [], max(0.0, timeout))[0]:
            return []
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return []
        ports = array.array("I")
        ports.frombytes(data[: len(data) - len(data) % 4])
        fired = list(dict.fromkeys(ports))  # coalesced, in delivery order
        if fired:
            os.write(self._fd, array.array("I", fired).tobytes())  # unmask
        return fired

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def available() -> bool:
    """Whether this host has a usable evtchn device (i.e. runs on Xen)."""
    try:
        os.close(os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False
