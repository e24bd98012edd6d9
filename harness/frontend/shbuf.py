"""The shared buffer of an OPEN and its page directory, as Linux builds them
(``xen_front_pgdir_shbuf_alloc``; SND-C-02, C-03, C-05).

Directory pages come first, then the buffer pages; every page is granted read/write to the
backend domain, directory pages first (so ``gref_directory`` is the first grant). Directory
page ``k`` holds the grefs of buffer pages ``k*1023 .. (k+1)*1023-1``; its
``gref_dir_next_page`` is the next directory page's gref, 0 on the last one; unused slots
are zero. Any buffer size works: ``ceil(npages / 1023)`` directory pages.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from harness.xen.api import Grants, SharedPages
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, XENSND_PAGE_DIR_GREFS

from .errors import SharedBufferError

#: Pages per allocation: gntalloc-style allocators cap one call (the sim at 1024), so a
#: large buffer is several contiguous chunks.
ALLOC_CHUNK = 1024


def num_pages(size: int) -> int:
    """``ceil(buffer_sz / 4096)``: the number of grefs the directory lists (SND-C-02)."""
    return -(-size // XEN_PAGE_SIZE)


def num_dir_pages(npages: int) -> int:
    """``guest_calc_num_grefs``: ``ceil(npages / 1023)``, at least one."""
    return max(1, -(-npages // XENSND_PAGE_DIR_GREFS))


@dataclass
class SharedBuffer:
    """A granted buffer plus its directory. Not reusable after :meth:`free`."""

    grants: Grants
    backend_domid: int
    size: int
    lock: Any = field(default_factory=threading.Lock)  # guards the (thread-unsafe) grants
    dir_pages: SharedPages = field(init=False)
    buf_chunks: list[SharedPages] = field(init=False, default_factory=list)
    dir_grefs: list[int] = field(init=False, default_factory=list)
    buf_grefs: list[int] = field(init=False, default_factory=list)
    freed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"buffer size must be at least 1 octet, not {self.size}")
        npages = num_pages(self.size)
        ndir = num_dir_pages(npages)
        with self.lock:
            # SND-C-03: directory pages are granted first, then the buffer pages; sharing
            # grants at allocation (the seam's only way, as gntalloc), in that order.
            self.dir_pages = self.grants.share_pages(ndir, self.backend_domid)
            try:
                self.dir_grefs = list(self.dir_pages.refs)
                for first in range(0, npages, ALLOC_CHUNK):
                    chunk = self.grants.share_pages(min(ALLOC_CHUNK, npages - first),
                                                    self.backend_domid)
                    self.buf_chunks.append(chunk)
                    self.buf_grefs.extend(chunk.refs)
            except BaseException:
                self._release()
                raise
        if 0 in self.dir_grefs:  # SND-C-05: gref 0 is never handed to PV drivers
            self.free()
            raise SharedBufferError("the platform returned grant ref 0 for a directory page")
        self._fill_directory()

    def _fill_directory(self) -> None:
        per = XENSND_PAGE_DIR_GREFS
        for k, _ in enumerate(self.dir_grefs):
            nxt = self.dir_grefs[k + 1] if k + 1 < len(self.dir_grefs) else 0
            page = codec.encode_page_directory(nxt, self.buf_grefs[k * per:(k + 1) * per])
            dst = self.dir_pages.page(k)
            dst[:len(page)] = page
            dst[len(page):] = bytes(len(dst) - len(page))

    @property
    def gref_directory(self) -> int:
        """OPEN's ``gref_directory``: the first directory page (SND-C-03)."""
        return self.dir_grefs[0]

    @property
    def npages(self) -> int:
        return len(self.buf_grefs)

    @property
    def view(self) -> memoryview:
        """The buffer, exactly ``size`` octets, when it is one contiguous chunk."""
        self._alive()
        if len(self.buf_chunks) != 1:
            raise SharedBufferError("a buffer of several allocations has no single view; "
                                    "use read/write")
        return self.buf_chunks[0].view[:self.size]

    def _spans(self, offset: int, length: int) -> list[tuple[memoryview, int, int, int]]:
        """(chunk view, start in chunk, end in chunk, start in the data) per chunk."""
        out, chunk_sz = [], ALLOC_CHUNK * XEN_PAGE_SIZE
        pos, end = offset, offset + length
        while pos < end:
            k, start = divmod(pos, chunk_sz)
            stop = min(chunk_sz, start + end - pos)
            out.append((self.buf_chunks[k].view, start, stop, pos - offset))
            pos += stop - start
        return out

    def _alive(self) -> None:
        if self.freed:
            raise SharedBufferError("the shared buffer was freed")

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SharedBufferError(f"[{offset}, {offset + length}) is outside the "
                                    f"{self.size}-octet buffer (SND-C-08)")

    def write(self, offset: int, data: bytes) -> None:
        self._alive()
        self._check(offset, len(data))
        src = memoryview(bytes(data))
        for view, start, stop, at in self._spans(offset, len(data)):
            view[start:stop] = src[at:at + stop - start]

    def read(self, offset: int, length: int) -> bytes:
        self._alive()
        self._check(offset, length)
        return b"".join(bytes(view[start:stop])
                        for view, start, stop, _ in self._spans(offset, length))

    def directory(self) -> list[tuple[int, tuple[int, ...]]]:
        """The directory pages as written: ``(gref_dir_next_page, all 1023 slots)``."""
        self._alive()
        return [codec.decode_page_directory(self.dir_pages.page(k))
                for k in range(len(self.dir_grefs))]

    def free(self) -> list[int]:
        """End foreign access to every page and free them (``xen_front_pgdir_shbuf_free``).
        Returns the refs whose revoke was busy (still mapped by the backend; released at
        its unmap, as ``gnttab_end_foreign_access`` defers)."""
        if self.freed:
            return []
        with self.lock:
            busy = self._release()
        return busy

    def _release(self) -> list[int]:
        busy = []
        for ref in [*self.dir_grefs, *self.buf_grefs]:
            with contextlib.suppress(OSError):
                if not self.grants.revoke(ref):
                    busy.append(ref)
        for pages in [*self.buf_chunks, getattr(self, "dir_pages", None)]:
            if pages is not None:
                with contextlib.suppress(OSError):
                    pages.free()
        self.freed = True
        return busy
