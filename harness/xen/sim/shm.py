"""Page-sized shared memory: one memfd per page, mapped contiguously with MAP_FIXED.

Python's ``mmap`` module cannot place a mapping at a chosen address, so the contiguous view
is built with libc ``mmap`` through ctypes: reserve the whole range with an anonymous
PROT_NONE mapping, then map each page's fd over its slot with MAP_FIXED. The fds can be
closed right after mapping (the mapping keeps the memfd alive).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
from collections.abc import Sequence

PAGE_SIZE = 4096

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MADV_DONTFORK = 10
_MAP_FAILED = ctypes.c_void_p(-1).value

_PyBUF_READ = 0x100
_PyBUF_WRITE = 0x200

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

_memview = ctypes.pythonapi.PyMemoryView_FromMemory
_memview.restype = ctypes.py_object
_memview.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)


def _check(addr: int | None) -> int:
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return addr


def new_page_fd(name: str = "xen-sim-page") -> int:
    """A sealed 4096-byte memfd: nobody holding it can grow or shrink the page.

    Its mode is 0400: a memfd is created 0777, so anyone handed a read-only descriptor could
    reopen it writable through ``/proc/self/fd/N``; on Xen a read-only grant can't be made
    writable by the mapper. Only the descriptors opened here (O_RDWR) can write; a
    privileged (CAP_DAC_OVERRIDE) process can still reopen it, as root in dom0 could map
    any page with privcmd."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o400)
        os.ftruncate(fd, PAGE_SIZE)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def reopen_readonly(fd: int) -> int:
    """A new open file description of the same page, read-only: a writable shared mmap of it
    fails with EACCES and it can't be reopened writable through /proc by the receiver."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


class ContiguousMapping:
    """``len(fds)`` pages mapped back to back; ``view`` is a memoryview over all of them.

    After :meth:`close` the range is unmapped as on Xen: views taken earlier must not be
    used any more (the one returned by ``view`` is released).
    """

    def __init__(self, fds: Sequence[int], readonly: bool = False,
                 dontfork: bool = False) -> None:
        self.npages = len(fds)
        if self.npages == 0:
            raise ValueError("no pages to map")
        self.readonly = readonly
        size = self.npages * PAGE_SIZE
        self._size = size
        self._addr = _check(_libc.mmap(None, size, PROT_NONE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0))
        prot = PROT_READ if readonly else PROT_READ | PROT_WRITE
        try:
            for i, fd in enumerate(fds):
                _check(_libc.mmap(self._addr + i * PAGE_SIZE, PAGE_SIZE, prot,
                                  MAP_SHARED | MAP_FIXED, fd, 0))
            # gntdev marks its mappings VM_DONTCOPY: a child forked after mapping does not
            # inherit foreign pages (it would keep them past unmap and revoke)
            if dontfork and _libc.madvise(self._addr, size, MADV_DONTFORK) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"madvise: {os.strerror(err)}")
        except BaseException:
            _libc.munmap(self._addr, size)
            self._addr = 0
            raise
        flags = _PyBUF_READ if readonly else _PyBUF_WRITE
        self._view: memoryview | None = _memview(self._addr, size, flags)

    @property
    def address(self) -> int:
        return self._addr

    @property
    def view(self) -> memoryview:
        if self._view is None:
            raise ValueError("mapping is closed")
        return self._view

    def page(self, index: int) -> memoryview:
        if not 0 <= index < self.npages:
            raise IndexError(f"page {index} out of range 0..{self.npages - 1}")
        return self.view[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]

    @property
    def closed(self) -> bool:
        return self._view is None

    def close(self) -> None:
        if self._view is None:
            return
        self._view.release()
        self._view = None
        if _libc.munmap(self._addr, self._size) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"munmap: {os.strerror(err)}")
        self._addr = 0


def map_and_close(fds: Sequence[int], readonly: bool = False,
                  dontfork: bool = False) -> ContiguousMapping:
    """Map ``fds`` contiguously, then close them whatever happens."""
    try:
        return ContiguousMapping(fds, readonly, dontfork)
    finally:
        for fd in fds:
            os.close(fd)
