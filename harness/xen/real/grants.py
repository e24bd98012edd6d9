"""Grant tables on a real Xen host: ``/dev/xen/gntalloc`` grants, ``/dev/xen/gntdev`` maps.

gntalloc grants a page when it allocates it (one grantee and one access mode per
allocation), which is why the seam's sharing call is ``share_pages(n, domid, readonly)``.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Sequence

from harness.xen.real import ioctls as I

GNTALLOC = "/dev/xen/gntalloc"
GNTDEV = "/dev/xen/gntdev"
PAGE_SIZE = 4096


class _MmapView:
    """A device mmap exposed as a memoryview, released exactly once."""

    def __init__(self, mm: mmap.mmap, gone: str) -> None:
        self._mm: mmap.mmap | None = mm
        self._view: memoryview | None = memoryview(mm)
        self._gone = gone

    @property
    def view(self) -> memoryview:
        if self._view is None:
            raise ValueError(self._gone)
        return self._view

    def _release(self) -> bool:
        """Drop the view and the mapping; False when that was done already."""
        if self._mm is None or self._view is None:
            return False
        mm, view = self._mm, self._view
        self._mm = self._view = None
        try:
            view.release()
            mm.close()
        except BufferError:
            # slices of the view are still held (a ring over the page, say): Python cannot
            # unmap under them without making them dangle. The mapping goes when the last
            # of them does; the grant's own release (gntdev's UNMAP_GRANT_REF, gntalloc's
            # DEALLOC) is asked for now and completes when the area is unmapped, as
            # gntdev defers it for any mapping still in use.
            pass
        return True


class RealSharedPages(_MmapView):
    def __init__(self, owner: RealGrants, index: int, refs: list[int], mm: mmap.mmap,
                 readonly: bool) -> None:
        super().__init__(mm, "pages freed")
        self._owner = owner
        self.index = index
        self.refs: Sequence[int] = refs  # api.SharedPages.refs
        self.npages = len(refs)
        self.readonly = readonly

    def page(self, index: int) -> memoryview:
        return self.view[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]

    def free(self) -> None:
        if self._release():
            self._owner._dealloc(self.index, self.npages)


class RealMapping(_MmapView):
    def __init__(self, owner: RealGrants, domid: int, refs: tuple[int, ...], readonly: bool,
                 index: int, mm: mmap.mmap) -> None:
        super().__init__(mm, "unmapped")
        self._owner = owner
        self.domid = domid
        self.refs = refs
        self.readonly = readonly
        self.index = index

    def unmap(self) -> None:
        if self._release():
            arg = I.ioctl_gntdev_unmap_grant_ref(index=self.index, count=len(self.refs))
            fcntl.ioctl(self._owner._gntdev(), I.IOCTL_GNTDEV_UNMAP_GRANT_REF, arg, True)


class RealGrants:
    """``api.Grants`` over gntalloc (sharing) and gntdev (mapping)."""

    def __init__(self, max_grants: int = 4096) -> None:
        self.max_grants = max_grants
        self._alloc_fd = -1
        self._dev_fd = -1
        self._by_ref: dict[int, tuple[int, RealSharedPages]] = {}

    def _gntalloc(self) -> int:
        if self._alloc_fd < 0:
            self._alloc_fd = os.open(GNTALLOC, os.O_RDWR | os.O_CLOEXEC)
        return self._alloc_fd

    def _gntdev(self) -> int:
        if self._dev_fd < 0:
            self._dev_fd = os.open(GNTDEV, os.O_RDWR | os.O_CLOEXEC)
            arg = I.ioctl_gntdev_set_max_grants(self.max_grants)
            try:
                fcntl.ioctl(self._dev_fd, I.IOCTL_GNTDEV_SET_MAX_GRANTS, arg, True)
            except OSError:
                pass  # newer kernels dropped the limit (and may reject the ioctl)
        return self._dev_fd

    def share_pages(self, npages: int, domid: int, readonly: bool = False) -> RealSharedPages:
        """``api.Grants.share_pages`` over IOCTL_GNTALLOC_ALLOC_GREF."""
        arg = I.gntalloc_alloc_gref(npages)
        arg.domid = domid
        arg.flags = 0 if readonly else I.GNTALLOC_FLAG_WRITABLE
        fd = self._gntalloc()
        fcntl.ioctl(fd, I.IOCTL_GNTALLOC_ALLOC_GREF, arg, True)
        try:
            mm = mmap.mmap(fd, npages * PAGE_SIZE, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE, offset=arg.index)
        except OSError:
            self._dealloc(arg.index, npages)
            raise
        pages = RealSharedPages(self, arg.index, list(arg.gref_ids[:npages]), mm, readonly)
        for i, ref in enumerate(pages.refs):
            self._by_ref[ref] = (i, pages)
        return pages

    def revoke(self, ref: int) -> bool:
        """Ends access to one page. gntalloc defers the release of a still-mapped grant
        without telling, so this returns True."""
        entry = self._by_ref.pop(ref, None)
        if entry is None:
            raise OSError(errno.EINVAL, f"no grant {ref}")
        i, pages = entry
        self._dealloc(pages.index + i * PAGE_SIZE, 1)
        return True

    def _dealloc(self, index: int, count: int) -> None:
        arg = I.ioctl_gntalloc_dealloc_gref(index=index, count=count)
        try:
            fcntl.ioctl(self._gntalloc(), I.IOCTL_GNTALLOC_DEALLOC_GREF, arg, True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # already deallocated page by page
                raise

    def set_unmap_notify(self, pages: RealSharedPages, offset: int, port: int | None) -> None:
        """Clear the byte at ``offset`` and/or notify ``port`` when the peer unmaps."""
        action = I.UNMAP_NOTIFY_CLEAR_BYTE | (I.UNMAP_NOTIFY_SEND_EVENT if port else 0)
        arg = I.ioctl_gntalloc_unmap_notify(index=pages.index + offset, action=action,
                                            event_channel_port=port or 0)
        fcntl.ioctl(self._gntalloc(), I.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, arg, True)

    def map(self, domid: int, refs: Sequence[int], readonly: bool = False) -> RealMapping:
        refs = tuple(refs)
        arg = I.gntdev_map_grant_ref(domid, list(refs))
        fd = self._gntdev()
        fcntl.ioctl(fd, I.IOCTL_GNTDEV_MAP_GRANT_REF, arg, True)
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        try:
            mm = mmap.mmap(fd, len(refs) * PAGE_SIZE, mmap.MAP_SHARED, prot, offset=arg.index)
        except OSError:
            unmap = I.ioctl_gntdev_unmap_grant_ref(index=arg.index, count=len(refs))
            fcntl.ioctl(fd, I.IOCTL_GNTDEV_UNMAP_GRANT_REF, unmap, True)
            raise
        return RealMapping(self, domid, refs, readonly, arg.index, mm)

    def close(self) -> None:
        for fd in (self._alloc_fd, self._dev_fd):
            if fd >= 0:
                os.close(fd)
        self._alloc_fd = self._dev_fd = -1
