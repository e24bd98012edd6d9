"""Fixtures of the harness's own tests: a running simulated Xen, and peer processes that
act as simulated domains."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.xen.sim.runner import Sim, running_sim

PEER_PRELUDE = textwrap.dedent("""
    import sys
    from harness.xen.sim.client import SimDomain
    dom = SimDomain.from_env(store=False)
    def line():
        return sys.stdin.readline().strip()
    def say(*words):
        print(*words, flush=True)
    """)


@pytest.fixture
def sim() -> Iterator[Sim]:
    """A running simulated Xen with domain 0 and domain 1 ("guest")."""
    with running_sim() as s:
        s.create_domain(1, "guest")
        yield s


class Peer:
    """Python code running in another process as a simulated domain. The code sees ``dom``
    (a SimDomain without store), ``line()`` to read from the test and ``say()`` to answer."""

    def __init__(self, sim: Sim, domid: int, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PEER_PRELUDE + textwrap.dedent(code)],
            env=sim.env(domid), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, text: str | None = None, timeout: float = 10.0) -> str:
        """Send a line (if any), then read one answer line, with a timeout."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if text is not None:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("peer did not answer in time")
        return self.proc.stdout.readline().strip()

    def finish(self, timeout: float = 10.0) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()


@pytest.fixture
def peer(sim: Sim) -> Iterator[Callable[[int, str], Peer]]:
    """Factory: ``peer(domid, code)``; every peer is killed at teardown."""
    peers: list[Peer] = []

    def start(domid: int, code: str) -> Peer:
        p = Peer(sim, domid, code)
        peers.append(p)
        return p

    yield start
    for p in peers:
        p.kill()


@pytest.fixture(scope="session")
def snd_be_binary() -> Path:
    """snd_be built from ../shared/peers (cached between runs), unmodified."""
    from requires import need_snd_be_build

    from harness.peers import snd_be

    need_snd_be_build()
    return snd_be.build_snd_be().binary
