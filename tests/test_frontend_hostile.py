"""The hostile constructions of ``harness.frontend.hostile`` without a backend: page
directories of every shape on an in-memory grant table, OPEN parameters from card
configurations, and the hand-played handshake's XenStore writes and releases on the sim."""

from __future__ import annotations

import pytest

from harness.card_config import DEFAULT_PCM_HW
from harness.frontend.hostile import (
    NO_SUCH_DOMID,
    DirShape,
    ManualFrontend,
    build_buffer,
    pick_open_params,
)
from harness.xen.api import Perm
from harness.xen.sim.runner import Sim
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, XENSND_PAGE_DIR_GREFS, PcmFormat
from protocol_models.xenstore import XsError

BE = 0


class FakePages:
    def __init__(self, n: int, refs: list[int]) -> None:
        self.npages, self.refs = n, refs
        self.data = bytearray(n * XEN_PAGE_SIZE)
        self.freed = False

    @property
    def view(self) -> memoryview:
        return memoryview(self.data)

    def page(self, i: int) -> memoryview:
        return self.view[i * XEN_PAGE_SIZE:(i + 1) * XEN_PAGE_SIZE]

    def free(self) -> None:
        self.freed = True


class FakeGrants:
    """Grant refs from 8 up; remembers grantee, read-only flag and revokes."""

    def __init__(self) -> None:
        self.next = 8
        self.granted: dict[int, tuple[int, bool]] = {}
        self.revoked: list[int] = []
        self.shared: list[FakePages] = []

    def share_pages(self, n: int, domid: int, readonly: bool = False) -> FakePages:
        refs = list(range(self.next, self.next + n))
        self.next += n
        for r in refs:
            self.granted[r] = (domid, readonly)
        pages = FakePages(n, refs)
        self.shared.append(pages)
        return pages

    def revoke(self, ref: int) -> bool:
        assert ref in self.granted and ref not in self.revoked, f"revoke of {ref}"
        self.revoked.append(ref)
        return True


def chain(buf) -> list[tuple[int, tuple[int, ...]]]:
    return buf.directory()


def test_valid_directory_is_what_linux_builds():
    g = FakeGrants()
    buf = build_buffer(g, BE, 3 * XEN_PAGE_SIZE + 1)  # 4 pages
    [(nxt, slots)] = chain(buf)
    assert nxt == 0 and list(slots[:4]) == buf.buf_grefs and not any(slots[4:])
    assert buf.gref_directory == buf.dir_grefs[0] != 0
    assert all(g.granted[r] == (BE, False) for r in buf.dir_grefs + buf.buf_grefs)


def test_two_directory_pages_chain_and_end():
    buf = build_buffer(FakeGrants(), BE, (XENSND_PAGE_DIR_GREFS + 2) * XEN_PAGE_SIZE)
    (n0, s0), (n1, s1) = chain(buf)
    assert n0 == buf.dir_grefs[1] and n1 == 0
    assert list(s0) + list(s1[:2]) == buf.buf_grefs and not any(s1[2:])


@pytest.mark.parametrize("ndir_pages", [1, 2])
def test_cyclic_directory_points_back_to_the_first_page(ndir_pages):
    n = 4 if ndir_pages == 1 else XENSND_PAGE_DIR_GREFS + 1
    buf = build_buffer(FakeGrants(), BE, n * XEN_PAGE_SIZE, DirShape.CYCLIC)
    assert len(buf.dir_grefs) == ndir_pages
    assert chain(buf)[-1][0] == buf.gref_directory


def test_short_long_and_gref0_directories():
    short = build_buffer(FakeGrants(), BE, 4 * XEN_PAGE_SIZE, DirShape.SHORT)
    assert list(chain(short)[0][1][:4]) == [*short.buf_grefs[:3], 0]
    long = build_buffer(FakeGrants(), BE, 4 * XEN_PAGE_SIZE, DirShape.LONG)
    (n0, s0), (n1, s1) = chain(long)
    assert n0 == long.dir_grefs[1] and list(s0[:4]) == long.buf_grefs
    assert n1 == 0 and not any(s1)
    zero = build_buffer(FakeGrants(), BE, 4 * XEN_PAGE_SIZE, DirShape.GREF0)
    slots = chain(zero)[0][1][:4]
    assert slots[2] == 0 and [s for i, s in enumerate(slots) if i != 2] == \
        [r for i, r in enumerate(zero.buf_grefs) if i != 2]


def test_revoked_shapes_end_one_grant_before_open_and_free_ends_the_rest():
    g = FakeGrants()
    buf = build_buffer(g, BE, 4 * XEN_PAGE_SIZE, DirShape.REVOKED_BUFFER)
    listed = chain(buf)[0][1][:4]
    # the third slot lists a page of its own, ended and unmapped before OPEN (a real
    # host keeps a grant whose page is still mapped)
    assert buf.victim is not None and g.revoked == [listed[2]] == list(buf.victim.refs)
    assert buf.victim.freed and listed[2] not in buf.buf_grefs
    assert [r for i, r in enumerate(listed) if i != 2] == \
        [r for i, r in enumerate(buf.buf_grefs) if i != 2]
    assert buf.free() == [] and sorted(g.revoked) == sorted(
        buf.dir_grefs + buf.buf_grefs + list(buf.victim.refs))
    assert all(p.freed for p in g.shared) and buf.free() == []  # idempotent
    g2 = FakeGrants()
    d = build_buffer(g2, BE, XEN_PAGE_SIZE, DirShape.REVOKED_DIR)
    assert g2.revoked == [d.gref_directory] and d.dir_pages[0].freed


def test_foreign_and_read_only_grants_apply_to_buffer_pages_only():
    g = FakeGrants()
    buf = build_buffer(g, BE, 2 * XEN_PAGE_SIZE, grantee=NO_SUCH_DOMID, readonly=True)
    assert all(g.granted[r] == (NO_SUCH_DOMID, True) for r in buf.buf_grefs)
    assert all(g.granted[r] == (BE, False) for r in buf.dir_grefs)  # the BE reads these


def test_pick_open_params_stays_inside_the_configured_space():
    p = pick_open_params(DEFAULT_PCM_HW)  # {U8, S16_LE}, 5512..48000, 1..2 channels
    assert (p.fmt, p.rate, p.channels) == (PcmFormat.S16_LE, 48000, 2)
    assert p.buffer_sz == 4 * p.period_sz and p.period_sz % p.frame == 0
    assert p.buffer_sz <= 16384
    fields = p.fields(period_sz=0)
    assert fields["period_sz"] == 0 and fields["pcm_format"] == int(PcmFormat.S16_LE)
    assert codec.encode_req("OPEN", id=1, gref_directory=9, **fields)[0:2] == b"\x01\x00"
    mono = DEFAULT_PCM_HW.__class__(**{**DEFAULT_PCM_HW.__dict__, "channels_min": 1,
                                       "channels_max": 1, "buffer_bytes_max": 1000})
    q = pick_open_params(mono)
    assert q.channels == 1 and q.buffer_sz <= 1000 and q.buffer_sz % (4 * q.frame) == 0


def test_manual_frontend_publishes_overrides_and_releases(sim: Sim):
    fe_path = "/local/domain/1/device/vsnd/0"
    tool = sim.domain(0)
    dom = sim.domain(1)
    try:
        tool.store.write(fe_path, "")
        tool.store.set_perms(fe_path, [Perm("n", 1)])  # the FE owns its directory
        mf = ManualFrontend(dom, fe_path, "/local/domain/0/backend/vsnd/1/0", BE,
                            ["0/0", "0/1"])
        mf.allocate()
        good = mf.transport("0/0")
        assert all(v.isdigit() for v in good.values())
        mf.publish({"0/0": {"ring-ref": "ring", "event-channel": None}})
        assert dom.store.read(f"{fe_path}/0/0/ring-ref") == b"ring"
        with pytest.raises(XsError):
            dom.store.read(f"{fe_path}/0/0/event-channel")
        assert dom.store.read(f"{fe_path}/0/1/ring-ref").decode() == \
            mf.transport("0/1")["ring-ref"]
        mf.set_state(3)
        assert dom.store.read(f"{fe_path}/state") == b"3" and mf.be_state() is None
        assert mf.wait_be_state([4], 0.05) is None
        refs = [int(mf.transport(p)[k]) for p in mf.paths for k in ("ring-ref",
                                                                   "evt-ring-ref")]
        assert len(sim.grants(1)) >= len(refs)
        mf.release()
        assert not sim.grants(1) and not sim.ports(1)
        with pytest.raises(XsError):
            dom.store.read(f"{fe_path}/0/1/ring-ref")
    finally:
        dom.close()
        tool.close()
