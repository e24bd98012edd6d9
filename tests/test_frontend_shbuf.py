"""The shared buffer and its page directory (SND-C-02, C-03, C-05): layout on in-memory
grants, and one buffer followed and mapped by the backend domain on the simulated Xen."""

from __future__ import annotations

import itertools
from typing import NoReturn

import pytest

from harness.frontend.errors import SharedBufferError
from harness.frontend.shbuf import SharedBuffer, num_dir_pages, num_pages
from harness.xen.api import Grants
from harness.xen.sim.runner import Sim
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, XENSND_PAGE_DIR_GREFS

BE = 0


class FakePages:
    def __init__(self, npages: int, refs: list[int]) -> None:
        self.npages = npages
        self.refs = refs
        self.mem = bytearray(b"\xAA" * npages * XEN_PAGE_SIZE)  # dirty: zeroing is ours

    @property
    def view(self) -> memoryview:
        return memoryview(self.mem)

    def page(self, index: int) -> memoryview:
        return self.view[index * XEN_PAGE_SIZE:(index + 1) * XEN_PAGE_SIZE]

    def free(self) -> None:
        self.freed = True


class FakeGrants:
    """Exactly the seam's ``Grants`` (what a real host offers: share, revoke, map), in
    memory: grant order and revokes are recorded; refs start at 8 like Xen's first free
    ref. No ``alloc_pages``/``grant``: the frontend must not need them."""

    def __init__(self, busy: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.refs = itertools.count(8)
        self.granted: list[tuple[FakePages, int, int, int]] = []
        self.revoked: list[int] = []
        self.busy = busy

    def share_pages(self, npages: int, domid: int, readonly: bool = False) -> FakePages:
        assert not readonly  # SND-C-03: read/write
        pages = FakePages(npages, [next(self.refs) for _ in range(npages)])
        self.granted += [(pages, i, domid, ref) for i, ref in enumerate(pages.refs)]
        return pages

    def revoke(self, ref: int) -> bool:
        self.revoked.append(ref)
        return ref not in self.busy

    def map(self, domid: int, refs: object, readonly: bool = False) -> NoReturn:
        raise AssertionError("the granting side never maps")

    def close(self) -> None:
        pass


def test_fake_grants_is_exactly_the_seam() -> None:
    """The fake offers the seam's ``Grants`` calls and nothing else, so the tests below
    show the frontend builds its buffers through real-host calls only."""
    public = {n for n in dir(FakeGrants) if not n.startswith("_")}
    assert public == {n for n in dir(Grants) if not n.startswith("_")}
    assert isinstance(FakeGrants(), Grants)


def chain(buf: SharedBuffer) -> list[int]:
    """Follow the directory like a backend: gref list from gref_directory on."""
    by_ref = {r: i for i, r in enumerate(buf.dir_grefs)}
    pages = buf.directory()
    out, ref, left = [], buf.gref_directory, buf.npages
    while ref:
        nxt, slots = pages[by_ref[ref]]
        take = min(left, XENSND_PAGE_DIR_GREFS)
        out += slots[:take]
        assert all(s == 0 for s in slots[take:])  # unused slots zero
        left -= take
        ref = nxt
    return out


@pytest.mark.parametrize("size,npages,ndir", [
    (1, 1, 1), (4096, 1, 1), (4097, 2, 1), (65536, 16, 1),
    (1023 * 4096, 1023, 1), (1023 * 4096 + 1, 1024, 2),
    (4_190_208 * 3 + 5, 3070, 4),
])
def test_layout(size: int, npages: int, ndir: int) -> None:
    grants = FakeGrants()
    buf = SharedBuffer(grants, BE, size)  # type: ignore[arg-type]
    assert num_pages(size) == npages and num_dir_pages(npages) == ndir
    assert (buf.npages, len(buf.dir_grefs)) == (npages, ndir)
    # directory pages granted first, then buffer pages, all to the backend (SND-C-03)
    assert [r for *_, r in grants.granted] == buf.dir_grefs + buf.buf_grefs
    assert {d for _, _, d, _ in grants.granted} == {BE}
    assert buf.gref_directory == buf.dir_grefs[0] != 0  # SND-C-05
    assert chain(buf) == buf.buf_grefs  # 0-terminated chain (SND-C-02)
    assert buf.directory()[-1][0] == 0
    assert bytes(buf.dir_pages.page(ndir - 1)[codec.PAGE_DIR_SIZE:]) == bytes(
        XEN_PAGE_SIZE - codec.PAGE_DIR_SIZE)
    end = b"end"[:size]
    buf.write(size - len(end), end)
    assert buf.read(size - len(end), len(end)) == end
    if len(buf.buf_chunks) == 1:
        assert len(buf.view) == size


def test_read_write_and_bounds() -> None:
    buf = SharedBuffer(FakeGrants(), BE, 10000)  # type: ignore[arg-type]
    buf.write(9990, b"0123456789")
    assert buf.read(9990, 10) == b"0123456789"
    with pytest.raises(SharedBufferError):
        buf.write(9995, b"0123456789")  # SND-C-08: never across the end
    with pytest.raises(SharedBufferError):
        buf.read(-1, 2)
    with pytest.raises(ValueError):
        SharedBuffer(FakeGrants(), BE, 0)  # type: ignore[arg-type]


def test_free_revokes_everything_and_reports_busy() -> None:
    grants = FakeGrants(busy={9})
    buf = SharedBuffer(grants, BE, 8192)  # type: ignore[arg-type]
    assert buf.free() == [9]
    assert grants.revoked == buf.dir_grefs + buf.buf_grefs
    assert buf.free() == []  # idempotent
    with pytest.raises(SharedBufferError):
        buf.read(0, 1)


def test_backend_follows_multi_page_directory_on_the_sim(sim: Sim) -> None:
    """> 4 190 208 octets: 2 directory pages; the backend maps the chain and the buffer
    read/write, sees what the frontend wrote and writes back (capture direction)."""
    size = 4_190_208 + 3 * 4096 + 100
    fe, be = sim.domain(1, store=False), sim.domain(0, store=False)
    buf = SharedBuffer(fe.grants, BE, size)
    try:
        assert len(buf.dir_grefs) == 2
        buf.write(size - 6, b"tail!!")
        buf.write(0, b"head")
        refs, ref = [], buf.gref_directory
        while ref:
            m = be.grants.map(1, [ref])
            nxt, slots = codec.decode_page_directory(m.view)
            refs += [r for r in slots if r][:buf.npages - len(refs)]
            m.unmap()
            ref = nxt
        assert refs == buf.buf_grefs
        maps = [be.grants.map(1, refs[i:i + 1024]) for i in range(0, len(refs), 1024)]
        assert bytes(maps[0].view[:4]) == b"head"
        tail = size - 6 - 1024 * 4096
        assert bytes(maps[1].view[tail:tail + 6]) == b"tail!!"
        maps[1].view[10:15] = b"fromB"
        assert buf.read(1024 * 4096 + 10, 5) == b"fromB"  # across the chunk boundary
        busy = buf.free()
        assert busy == refs  # still mapped by the backend: revokes deferred
        for m in maps:
            m.unmap()
        assert sim.busy_revokes(1) and all(r.released for r in sim.busy_revokes(1))
    finally:
        buf.free()
