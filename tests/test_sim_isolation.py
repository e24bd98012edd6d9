"""The simulated hypervisor isolates domains as Xen does, also against a mapper that misuses
what it was handed (issue 17 items 1-3, 5): a read-only grant stays read-only, access ends
at unmap, and one guest's abuse neither exhausts the daemon nor stalls other domains."""

from __future__ import annotations

import errno
import os
import socket
import textwrap
import time

import pytest

from harness.xen.sim import hvproto as P
from harness.xen.sim import shm
from harness.xen.sim.hvproto import Op

PAGE = shm.PAGE_SIZE

# Attack code run in a peer (domain 1): map `ref` of domain 0 through the raw protocol, keep
# the page's descriptor, and try to write the page through it.
_RAW_MAP = textwrap.dedent("""
    import os, ctypes
    from harness.xen.sim import hvproto as P
    from harness.xen.sim.hvproto import Op
    def raw_map(ref, readonly):
        _, fds, mid = dom.grants._conn.call_chunked(
            Op.GNT_MAP, P.u32s(0, P.GRANT_READONLY if readonly else 0, 1, ref))
        return mid, fds[0]
    def unprivileged():
        # an ordinary user (root's CAP_DAC_OVERRIDE would open anything), still able to
        # read its own /proc/self/fd (setuid clears "dumpable")
        os.setgid(65534); os.setuid(65534)
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    def try_write(fd, data):
        try:
            rw = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        except OSError as exc:
            return "refused:" + str(exc.errno)
        os.pwrite(rw, data, 0)
        os.close(rw)
        return "written"
""")


def test_read_only_grant_cannot_be_reopened_writable(sim, peer):
    # item 1: on Xen a read-only grant is read-only whatever the mapper does
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(1)
    pages.view[:4] = b"safe"
    ref = g0.grant(pages, 0, 1, readonly=True)
    p = peer(1, _RAW_MAP + textwrap.dedent("""
        ref = int(line())
        unprivileged()
        mid, fd = raw_map(ref, True)
        say(try_write(fd, b"EVIL"))
        """))
    answer = p.ask(str(ref))
    assert answer.startswith("refused"), answer
    assert bytes(pages.view[:4]) == b"safe"
    p.finish()


def test_fault_page_cannot_be_reopened_writable(sim, peer):
    p = peer(1, _RAW_MAP + textwrap.dedent("""
        unprivileged()
        msg = dom.grants._conn.call(Op.FAULT_PAGE)
        say(try_write(msg.fds[0], b"\\1\\0\\0\\0"))
        """))
    assert p.ask().startswith("refused")
    p.finish()


def test_access_ends_at_unmap_even_for_a_kept_descriptor(sim, peer):
    # item 2: a mapper that keeps the page's descriptor still holds the page: the
    # accounting must show it as mapped (Xen would refuse to end access) until it lets go
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(1)
    ref = g0.grant(pages, 0, 1)
    p = peer(1, _RAW_MAP + textwrap.dedent("""
        ref = int(line())
        mid, fd = raw_map(ref, False)
        dom.grants._conn.call(Op.GNT_UNMAP, P.u32s(mid))
        say("unmapped")
        line()
        os.close(fd)
        say("closed")
        line()
        """))
    assert p.ask(str(ref)) == "unmapped"
    assert [(m.granter, m.mapper, m.ref) for m in sim.mappings(granter=0)] == [(0, 1, ref)]
    assert g0.revoke(ref) is False  # still reachable by domain 1: busy, as on Xen
    assert p.ask("go") == "closed"
    deadline = time.monotonic() + 5
    while sim.mappings(granter=0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.mappings(granter=0) == []
    p.finish()


def test_mappings_are_not_inherited_across_fork(sim, peer):
    # item 2: gntdev mappings are VM_DONTCOPY; a child forked after mapping has no access
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(1)
    ref = g0.grant(pages, 0, 1)
    p = peer(1, """
        import os
        ref = int(line())
        m = dom.grants.map(0, [ref])
        addr = m._mapping.address
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            import ctypes
            os.close(r)
            try:
                ctypes.memmove(addr, b"FORK", 4)  # SIGSEGV if not inherited
            except BaseException:
                pass
            os.write(w, b"wrote")
            os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        out = os.read(r, 16)
        m.unmap()
        say(out.decode() or "nothing", os.WIFSIGNALED(status))
        """)
    answer = p.ask(str(ref))
    assert bytes(pages.view[:4]) != b"FORK", answer
    assert answer.startswith("nothing"), answer
    p.finish()


def test_grant_table_and_page_limits(sim):
    # item 3: Xen's grant table is bounded (gnttab_max_frames 64: 32768 v1 entries) and
    # Linux's gntalloc refuses more pages than its limit; the sim must refuse, not run out
    # of descriptors
    from harness.xen.sim import hypervisor as H

    g1 = sim.domain(1, store=False).grants
    held = []
    with pytest.raises(OSError) as exc:
        for _ in range(H.MAX_PAGES_PER_DOMAIN // 1024 + 2):
            held.append(g1.alloc_pages(1024))
    assert exc.value.errno in (errno.ENOSPC, errno.ENOMEM)
    # another domain is not affected
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(1)
    pages.free()
    for h in held:
        h.free()
    pages = g1.alloc_pages(1)
    pages.free()


def test_grant_limit(sim):
    from harness.xen.sim import hypervisor as H

    assert H.MAX_GRANTS <= 32768  # Xen 4.17's default table (64 frames of v1 entries)
    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(1)
    conn = g1._conn
    n = 0
    with pytest.raises(OSError) as exc:
        for _ in range(H.MAX_GRANTS + 1):
            conn.call(Op.GNT_GRANT, P.u32s(pages.page_ids[0], 0, 0))
            n += 1
    assert exc.value.errno == errno.ENOSPC
    assert n == H.MAX_GRANTS


def test_a_guest_that_never_reads_does_not_stall_others(sim):
    # item 5: a hypercall can't block Xen for other domains; a guest that floods requests
    # and never reads its replies must not delay domain 0
    path = sim.hypervisor_path(1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    s.setblocking(False)
    req = P.pack(Op.WHOAMI, 1, b"")
    sent = 0
    try:
        while sent < 100000:
            s.send(req)
            sent += 1
    except BlockingIOError:
        pass
    g0 = sim.domain(0, store=False).grants
    worst = 0.0
    for _ in range(20):
        t = time.monotonic()
        g0.alloc_pages(1).free()
        worst = max(worst, time.monotonic() - t)
    s.close()
    assert worst < 0.5, worst


def test_page_fds_are_not_writable_by_path():
    fd = shm.new_page_fd()
    try:
        assert os.fstat(fd).st_mode & 0o222 == 0
    finally:
        os.close(fd)


def test_a_guest_program_cannot_use_dom0s_sockets(sim, peer):
    # item 6: a program run as domain 1 is refused on domain 0's hypervisor and (privileged)
    # xenstored sockets; its own still work
    p = peer(1, """
        from harness.xen.sim.client import SimControl
        from harness.xen.xsclient import XsClient
        out = []
        try:
            SimControl(line(), timeout=2).list_domains()
            out.append("hv-open")
        except Exception:
            out.append("hv-refused")
        try:
            XsClient(line(), 0, timeout=2).read("/local")
            out.append("xs-open")
        except Exception:
            out.append("xs-refused")
        out.append("mine-ok" if dom.grants.alloc_pages(1) else "mine-bad")
        say(*out)
        """)
    p.proc.stdin.write(sim.hypervisor_path(0) + "\n")
    assert p.ask(sim.xenstored_path(0)) == "hv-refused xs-refused mine-ok"
    p.finish()


@pytest.fixture
def gt(sim, monkeypatch):
    from test_clibs_gnttab import Gnttab, need_gcc

    from harness.xen.sim.clibs import build

    need_gcc()
    for k, v in sim.env(0).items():
        if k.startswith("XEN"):
            monkeypatch.setenv(k, v)
    return Gnttab(str(build.build_libs()))


def test_c_library_mappings_are_not_inherited_across_fork(sim, gt):
    # item 2, the replacement libxengnttab: gntdev's VM_DONTCOPY (madvise MADV_DONTFORK)
    import ctypes

    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(1)
    ref = g1.grant(pages, 0, 0)
    h = gt.xengnttab_open(None, 0)
    try:
        addr = gt.xengnttab_map_grant_ref(h, 1, ref, 3)
        assert addr
        pid = os.fork()
        if pid == 0:  # the child: SIGSEGV if the mapping was inherited... or not there
            try:
                ctypes.memmove(addr, b"FORK", 4)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), "the child could write the foreign page"
        assert bytes(pages.view[:4]) != b"FORK"
        assert gt.xengnttab_unmap(h, addr, 1) == 0
    finally:
        assert gt.xengnttab_close(h) == 0
