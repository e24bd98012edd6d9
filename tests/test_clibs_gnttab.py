"""Semantics of the replacement libxengnttab (loaded with ctypes, acting as domain 0)
against a Python domain 1 of the sim: N refs become one contiguous mapping, data is shared
both ways, read-only is enforced, the sim's accounting sees every map and unmap, one handle
works from many threads at once, and the granting side (xengntshr) works too."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator

import pytest
from requires import need_xen_c_toolchain

from harness.xen.sim.clibs import build
from harness.xen.sim.runner import Sim

PAGE = 4096
PROT_READ, PROT_WRITE = 1, 2


def need_gcc() -> None:
    need_xen_c_toolchain("libxengnttab.so.1")


class Gnttab:
    """ctypes view of the replacement libxengnttab."""

    def __init__(self, libdir: str) -> None:
        lib = ctypes.CDLL(os.path.join(libdir, "libxengnttab.so.1"), use_errno=True)
        vp, i, u = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
        up = ctypes.POINTER(ctypes.c_uint32)
        sig = {
            "xengnttab_open": (vp, [vp, ctypes.c_uint]),
            "xengnttab_close": (i, [vp]),
            "xengnttab_fd": (i, [vp]),
            "xengnttab_map_grant_ref": (vp, [vp, u, u, i]),
            "xengnttab_map_grant_refs": (vp, [vp, u, up, up, i]),
            "xengnttab_map_domain_grant_refs": (vp, [vp, u, u, up, i]),
            "xengnttab_unmap": (i, [vp, vp, u]),
            "xengnttab_set_max_grants": (i, [vp, u]),
            "xengnttab_dmabuf_imp_release": (i, [vp, u]),
            "xengntshr_open": (vp, [vp, ctypes.c_uint]),
            "xengntshr_close": (i, [vp]),
            "xengntshr_share_pages": (vp, [vp, u, i, up, i]),
            "xengntshr_unshare": (i, [vp, vp, u]),
        }
        for name, (res, args) in sig.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
            setattr(self, name, f)

    @staticmethod
    def errno() -> int:
        return ctypes.get_errno()


def u32s(values: list[int]) -> ctypes.Array[ctypes.c_uint32]:
    return (ctypes.c_uint32 * len(values))(*values)


def read(addr: int, n: int) -> bytes:
    return ctypes.string_at(addr, n)


@pytest.fixture
def gt(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gnttab]:
    need_gcc()
    for k, v in sim.env(0).items():
        if k.startswith("XEN"):
            monkeypatch.setenv(k, v)
    yield Gnttab(str(build.build_libs()))


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * seed + 3) & 0xFF for i in range(n))


def test_map_domain_grant_refs_is_one_contiguous_shared_mapping(sim: Sim, gt: Gnttab) -> None:
    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(8)
    pages.view[:] = pattern(8 * PAGE, 31)
    refs = [g1.grant(pages, i, 0) for i in range(8)]
    h = gt.xengnttab_open(None, 0)
    try:
        addr = gt.xengnttab_map_domain_grant_refs(h, 8, 1, u32s(refs), PROT_READ | PROT_WRITE)
        assert addr, os.strerror(gt.errno())
        assert read(addr, 8 * PAGE) == pattern(8 * PAGE, 31)
        ctypes.memmove(addr + 3 * PAGE + 10, b"from C", 6)
        assert bytes(pages.view[3 * PAGE + 10:3 * PAGE + 16]) == b"from C"
        live = sim.mappings(granter=1, mapper=0)
        assert sorted(m.ref for m in live) == sorted(refs)
        assert gt.xengnttab_unmap(h, addr, 7) == -1 and gt.errno() == errno.EINVAL
        assert gt.xengnttab_unmap(h, addr, 8) == 0
        assert sim.mappings(granter=1, mapper=0) == []
        assert len(sim.mappings(granter=1, mapper=0, history=True)) == 8
    finally:
        assert gt.xengnttab_close(h) == 0


def test_map_grant_refs_across_domains(sim: Sim, gt: Gnttab) -> None:
    sim.create_domain(2, "two")
    g1, g2 = sim.domain(1, store=False).grants, sim.domain(2, store=False).grants
    p1, p2 = g1.alloc_pages(1), g2.alloc_pages(1)
    p1.view[:4] = b"one!"
    p2.view[:4] = b"two!"
    refs = [g1.grant(p1, 0, 0), g2.grant(p2, 0, 0)]
    h = gt.xengnttab_open(None, 0)
    try:
        addr = gt.xengnttab_map_grant_refs(h, 2, u32s([1, 2]), u32s(refs), PROT_READ)
        assert addr
        assert read(addr, 4) == b"one!" and read(addr + PAGE, 4) == b"two!"
        assert gt.xengnttab_unmap(h, addr, 2) == 0
    finally:
        gt.xengnttab_close(h)
    assert sim.mappings(mapper=0) == []


def test_readonly_and_bad_refs(sim: Sim, gt: Gnttab) -> None:
    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(1)
    ro = g1.grant(pages, 0, 0, readonly=True)
    h = gt.xengnttab_open(None, 0)
    try:
        assert not gt.xengnttab_map_grant_ref(h, 1, ro, PROT_READ | PROT_WRITE)
        assert gt.errno() == errno.EPERM
        addr = gt.xengnttab_map_grant_ref(h, 1, ro, PROT_READ)
        assert addr
        assert gt.xengnttab_unmap(h, addr, 1) == 0
        assert not gt.xengnttab_map_grant_ref(h, 1, 12345, PROT_READ)
        assert gt.errno() == errno.EINVAL
        assert not gt.xengnttab_map_domain_grant_refs(h, 0, 1, u32s([ro]), PROT_READ)
        assert gt.errno() == errno.EINVAL
        assert gt.xengnttab_unmap(h, 0x1000, 1) == -1 and gt.errno() == errno.EINVAL
        assert gt.xengnttab_set_max_grants(h, 128) == 0
        assert gt.xengnttab_fd(h) >= 0
        assert gt.xengnttab_dmabuf_imp_release(h, 3) == -1 and gt.errno() == errno.ENOSYS
    finally:
        gt.xengnttab_close(h)
    assert gt.xengnttab_close(None) == 0
    assert gt.xengnttab_fd(None) == -1 and gt.errno() == errno.EBADF
    assert not gt.xengnttab_map_grant_ref(None, 1, ro, PROT_READ)


def test_one_handle_many_threads(sim: Sim, gt: Gnttab) -> None:
    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(4)
    pages.view[:] = pattern(4 * PAGE, 13)
    refs = [g1.grant(pages, i, 0) for i in range(4)]
    arr = u32s(refs)
    h = gt.xengnttab_open(None, 0)
    errors: list[str] = []

    def churn() -> None:
        for _ in range(50):
            addr = gt.xengnttab_map_domain_grant_refs(h, 4, 1, arr, PROT_READ)
            if not addr:
                errors.append(os.strerror(gt.errno()))
                return
            if read(addr, 4 * PAGE) != pattern(4 * PAGE, 13):
                errors.append("bad data")
            if gt.xengnttab_unmap(h, addr, 4) != 0:
                errors.append("unmap failed")

    threads = [threading.Thread(target=churn) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        gt.xengnttab_close(h)
    assert errors == []
    assert sim.mappings(mapper=0) == []
    assert len(sim.mappings(mapper=0, history=True)) == 8 * 50 * 4


def test_close_releases_live_mappings(sim: Sim, gt: Gnttab) -> None:
    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(2)
    refs = [g1.grant(pages, i, 0) for i in range(2)]
    h = gt.xengnttab_open(None, 0)
    assert gt.xengnttab_map_domain_grant_refs(h, 2, 1, u32s(refs), PROT_READ)
    assert len(sim.mappings(mapper=0)) == 2
    assert gt.xengnttab_close(h) == 0
    assert sim.mappings(mapper=0) == []


def test_gntshr_granting_side(sim: Sim, gt: Gnttab) -> None:
    g1 = sim.domain(1, store=False).grants
    h = gt.xengntshr_open(None, 0)
    try:
        refs = u32s([0, 0, 0])
        addr = gt.xengntshr_share_pages(h, 1, 3, refs, 1)
        assert addr, os.strerror(gt.errno())
        ctypes.memmove(addr + 2 * PAGE, b"shared by C", 11)
        m = g1.map(0, list(refs))
        assert bytes(m.view[2 * PAGE:2 * PAGE + 11]) == b"shared by C"
        m.view[0:6] = b"answer"
        assert read(addr, 6) == b"answer"
        assert gt.xengntshr_unshare(h, addr, 3) == 0
        busy = [g for g in sim.grants(0) if g.busy]  # still mapped by domain 1: deferred
        assert len(busy) == 3
        m.unmap()
        assert sim.grants(0) == []
        ro = u32s([0])
        addr = gt.xengntshr_share_pages(h, 1, 1, ro, 0)
        assert addr
        with pytest.raises(PermissionError):
            g1.map(0, [ro[0]])
        assert gt.xengntshr_unshare(h, addr, 1) == 0
        assert not gt.xengntshr_share_pages(h, 1, 0, ro, 1)
        assert gt.errno() == errno.EINVAL
    finally:
        assert gt.xengntshr_close(h) == 0


PAST_THE_END = """
import ctypes, os, sys
lib = ctypes.CDLL(os.path.join(sys.argv[1], "libxengnttab.so.1"), use_errno=True)
lib.xengnttab_open.restype = ctypes.c_void_p
lib.xengnttab_open.argtypes = [ctypes.c_void_p, ctypes.c_uint]
lib.xengnttab_map_domain_grant_refs.restype = ctypes.c_void_p
lib.xengnttab_map_domain_grant_refs.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32),
    ctypes.c_int]
h = lib.xengnttab_open(None, 0)
refs = [int(r) for r in sys.argv[2:]]
# the second mapping first: mmap places the next one right below it
b = lib.xengnttab_map_domain_grant_refs(h, 1, 1, (ctypes.c_uint32 * 1)(refs[2]), 1)
a = lib.xengnttab_map_domain_grant_refs(h, 2, 1, (ctypes.c_uint32 * 2)(*refs[:2]), 1)
assert a and b, os.strerror(ctypes.get_errno())
print("inside", ctypes.string_at(a + 2 * 4096 - 2, 2), "next", hex(b - a), flush=True)
print("past the end", ctypes.string_at(a + 2 * 4096, 1), flush=True)
"""


def test_an_access_past_a_mapping_faults_as_on_real_xen(sim: Sim, gt: Gnttab) -> None:
    """A backend that reads past the pages it mapped (snd_be's unchecked out-of-bounds
    READ) dies of SIGSEGV on real Xen; here too, though another mapping may lie right
    after: a page of each mapping's reservation is left inaccessible."""
    import signal
    import subprocess
    import sys

    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(3)
    pages.view[:] = b"\x01" * (3 * PAGE)
    refs = [g1.grant(pages, i, 0) for i in range(3)]
    env = {**os.environ, **{k: v for k, v in sim.env(0).items() if k.startswith("XEN")}}
    proc = subprocess.run([sys.executable, "-c", PAST_THE_END, str(build.build_libs()),
                           *map(str, refs)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "inside b'\\x01\\x01'" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == -signal.SIGSEGV and "past the end" not in proc.stdout, \
        (proc.returncode, proc.stdout, proc.stderr)
