"""The shared buffer of an OPEN: walking the page directory (SND-C-02..C-05) and the
grant-mapping port the stream core uses (the driver implements it over ``api.Grants``;
tests use a dictionary of pages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, XenErrno

from .defects import NO_DEFECTS, Defects

GREFS_PER_DIR_PAGE = codec.PAGE_DIR_GREFS
#: Defect "follow-cyclic-directory": pages walked before that backend gives up.
CYCLIC_WALK_CAP = 20_000


class MappedBuffer(Protocol):
    @property
    def view(self) -> memoryview: ...
    def unmap(self) -> None: ...


class GrantMemory(Protocol):
    """The frontend's pages, as the backend reaches them. Both raise :class:`MapError`."""

    def read_page(self, gref: int) -> bytes:
        """Map ``gref`` read-only, copy the page out, unmap it."""
        ...

    def map_buffer(self, grefs: Sequence[int]) -> MappedBuffer:
        """Map ``grefs`` read/write as one contiguous view (C-04: capture and GET_VOLUME
        write into the buffer)."""
        ...


class MapError(Exception):
    """A grant could not be mapped; ``status`` is the response status (SND-G-05)."""

    def __init__(self, message: str, status: int = -int(XenErrno.EFAULT)) -> None:
        super().__init__(message)
        self.status = status


class DirectoryError(Exception):
    """A malformed page directory (SND-C-04): answered with ``status``."""

    def __init__(self, message: str, status: int = -int(XenErrno.EINVAL)) -> None:
        super().__init__(message)
        self.status = status


def num_grefs(buffer_sz: int) -> int:
    """``ceil(buffer_sz / 4096)``: the count is not sent anywhere (sndif.h, C-02)."""
    return -(-buffer_sz // XEN_PAGE_SIZE)


def walk_directory(memory: GrantMemory, gref_directory: int, buffer_sz: int,
                   defects: Defects = NO_DEFECTS) -> list[int]:
    """Follow ``gref_dir_next_page`` until exactly ``num_grefs(buffer_sz)`` grefs are
    collected. Rejects gref 0 (C-05), a chain that ends early, one that continues after the
    last needed page, and cycles (C-04). Each directory page is copied out before use, so a
    frontend rewriting it meanwhile cannot change what was validated."""
    need = num_grefs(buffer_sz)
    if defects.has("follow-cyclic-directory"):
        _walk_to_end(memory, gref_directory)
    grefs: list[int] = []
    seen: set[int] = set()
    page_ref = gref_directory
    while True:
        if page_ref == 0:
            raise DirectoryError(f"directory chain ends after {len(grefs)} of {need} grefs")
        if page_ref in seen:
            raise DirectoryError(f"directory chain loops back to gref {page_ref}")
        seen.add(page_ref)
        page = memory.read_page(page_ref)
        take = min(GREFS_PER_DIR_PAGE, need - len(grefs))
        next_ref, entries = codec.decode_page_directory(page, count=take)
        if 0 in entries:
            raise DirectoryError(f"directory page {page_ref} lists gref 0 (C-05)")
        grefs.extend(entries)
        if len(grefs) < need and defects.has("ignore-later-directory-pages"):
            raise DirectoryError(f"buffer needs {need} grefs, more than one directory page")
        if len(grefs) == need:
            if next_ref != 0:
                raise DirectoryError(f"directory chain continues (gref {next_ref}) after "
                                     f"all {need} grefs")
            return grefs
        page_ref = next_ref


def _walk_to_end(memory: GrantMemory, page_ref: int) -> None:
    """Defect "follow-cyclic-directory": the chain walked to next = 0 with no cycle check
    (C-04, G-07), as a backend counting pages before collecting them would."""
    for _ in range(CYCLIC_WALK_CAP):
        if page_ref == 0:
            return
        page_ref, _entries = codec.decode_page_directory(memory.read_page(page_ref), count=0)
    raise DirectoryError(f"directory chain longer than {CYCLIC_WALK_CAP} pages")
