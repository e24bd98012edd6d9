"""The ring watchdog: samples every connected stream's request ring and measures how long
``req_prod`` has been ahead of ``rsp_prod`` with ``rsp_prod`` not moving. Evidence of a
hang, not a verdict (a probe request decides). When the backend process is known dead it
releases the frontend's waiting callers at once, so a crash is judged without waiting out
the request timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from harness.frontend.driver import FrontendDevice
from harness.rings import REQ_PROD, RSP_PROD, u32

PERIOD = 0.05


class RingWatchdog:
    def __init__(self, device: Callable[[], FrontendDevice | None],
                 dead: Callable[[], bool]) -> None:
        self._device = device
        self._dead = dead
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._since: dict[str, tuple[int, float]] = {}  # path -> (rsp_prod, stalled since)
        self.max_stall: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="ring-watchdog",
                                        daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self._since.clear()
            self.max_stall.clear()

    def worst(self) -> tuple[str, float] | None:
        with self._lock:
            if not self.max_stall:
                return None
            path = max(self.max_stall, key=self.max_stall.__getitem__)
            return path, self.max_stall[path]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _loop(self) -> None:
        while not self._stop.wait(PERIOD):
            dev = self._device()
            if dev is None:
                continue
            if self._dead():
                # nobody will answer: release the waiting callers now (Linux's -EIO)
                for s in list(dev.streams):
                    s.abort_requests()
                continue
            now = time.monotonic()
            for s in list(dev.streams):
                # under the stream's lock: the driver drops ``channel`` under it before
                # it unmaps the pages, so a page read here is never a freed one
                if not s.cond.acquire(timeout=PERIOD):
                    continue
                try:
                    ch = s.channel
                    if ch is None or not s.connected:
                        raise ValueError
                    req = u32(int.from_bytes(ch.ring_page[REQ_PROD:REQ_PROD + 4], "little"))
                    rsp = u32(int.from_bytes(ch.ring_page[RSP_PROD:RSP_PROD + 4], "little"))
                except (ValueError, IndexError, TypeError, AttributeError):
                    with self._lock:  # page gone (freed/reconnected): no stall to follow
                        self._since.pop(s.path, None)
                    continue
                finally:
                    s.cond.release()
                with self._lock:
                    if req == rsp:
                        self._since.pop(s.path, None)
                        continue
                    old = self._since.get(s.path)
                    if old is None or old[0] != rsp:
                        self._since[s.path] = (rsp, now)
                        continue
                    stall = now - old[1]
                    if stall > self.max_stall.get(s.path, 0.0):
                        self.max_stall[s.path] = stall
