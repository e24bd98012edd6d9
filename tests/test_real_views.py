"""The real-host grant views (no Xen needed: an anonymous mmap stands in for the device's,
and the device calls are recorded): released exactly once, unusable afterwards."""

from __future__ import annotations

import mmap

import pytest

from harness.xen.real import grants as G
from harness.xen.real import ioctls as I


class Owner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def _dealloc(self, index: int, count: int) -> None:
        self.calls.append(("dealloc", index, count))

    def _gntdev(self) -> int:
        return -1


def test_shared_pages_free_once(monkeypatch) -> None:
    owner = Owner()
    pages = G.RealSharedPages(owner, 4, [8, 9], mmap.mmap(-1, 2 * 4096), False)  # type: ignore[arg-type]
    pages.page(1)[:2] = b"hi"
    assert bytes(pages.view[4096:4098]) == b"hi" and pages.npages == 2
    pages.free()
    pages.free()
    assert owner.calls == [("dealloc", 4, 2)]
    with pytest.raises(ValueError, match="pages freed"):
        pages.view  # noqa: B018


def test_mapping_unmaps_once(monkeypatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(G.fcntl, "ioctl", lambda fd, req, arg, mut: sent.append(req))
    m = G.RealMapping(Owner(), 1, (8, 9), False, 0, mmap.mmap(-1, 2 * 4096))  # type: ignore[arg-type]
    m.unmap()
    m.unmap()
    assert sent == [I.IOCTL_GNTDEV_UNMAP_GRANT_REF]
    with pytest.raises(ValueError, match="unmapped"):
        m.view  # noqa: B018


def test_unmap_with_slices_still_held(monkeypatch) -> None:
    """A ring kept over a mapped page (a slice of the view) does not make the unmap fail:
    the grant is released now, the mapping itself when the slice goes."""
    sent: list[int] = []
    monkeypatch.setattr(G.fcntl, "ioctl", lambda fd, req, arg, mut: sent.append(req))
    mm = mmap.mmap(-1, 4096)
    m = G.RealMapping(Owner(), 1, (8,), False, 0, mm)  # type: ignore[arg-type]
    ring = m.view[0:64]
    ring[:2] = b"ok"
    m.unmap()  # raised BufferError ("cannot close exported pointers exist") before
    assert sent == [I.IOCTL_GNTDEV_UNMAP_GRANT_REF]
    assert bytes(ring[:2]) == b"ok"  # still valid memory, not a dangling view
    ring.release()
    mm.close()
    assert mm.closed
