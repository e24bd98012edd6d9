"""An exclusive lock on a file, waited for with a deadline (one build or preparation of a
cache entry at a time, across processes)."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path, timeout: float,
              on_timeout: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; after ``timeout`` seconds of waiting raise
    ``on_timeout(message)``."""
    with open(path, "a+b") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise on_timeout(f"another process holds {path} for more than "
                                     f"{timeout:g} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
