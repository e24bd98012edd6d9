"""Coverage feedback for C/C++ backends (issue 12): an snd_be build instrumented with GCC's
``-fsanitize-coverage=trace-pc`` and linked with our small runtime
(``harness/peers/sndif_cov.c``), which counts edges into a bitmap shared through
``/dev/shm/sndif-cov-<pid>``; the fuzzer reads it after every example, while the backend
runs, and steers Hypothesis towards examples that reach new edges (``target()``).

    python -m harness.fuzz.coverage          # builds it, prints the instrumented binary
    sndif-harness fuzz --backend "exec:$BIN -v *:Debug" --audio pulse \\
        --unique-id 'pulse<{device}>' --coverage-feedback --budget 2m
    sndif-harness fuzz ... --compare-feedback --budget 1m   # edges with vs without

The build is the peers' snd_be recipe (:mod:`harness.peers.snd_be`) with extra compiler
flags (a cache key of its own): nothing of snd_be is copied or changed. gcov
(``--coverage``) was not used: its counters reach the ``.gcda`` files only at exit, and
a backend under fuzzing exits only when it crashes.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RUNTIME_SOURCE = Path(__file__).resolve().parents[1] / "peers" / "sndif_cov.c"
MAP_PREFIX = "/dev/shm/sndif-cov-"
MAP_SIZE = 1 << 20  # as sndif_cov.c


class CoverageError(RuntimeError):
    """The instrumented build or its runtime could not be made (one line)."""


def build_runtime(cache: Path | None = None) -> Path:
    """``libsndifcov.so`` for the current runtime source (cached by its hash)."""
    from harness.peers.snd_be import default_cache_root

    src = RUNTIME_SOURCE.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    out = (cache or default_cache_root()) / "peers" / f"sndif-cov-{digest}"
    lib = out / "libsndifcov.so"
    if lib.is_file():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".libsndifcov.so.{os.getpid()}"
    try:
        proc = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(tmp),
                               str(RUNTIME_SOURCE)], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CoverageError(f"cannot build the coverage runtime: {exc}") from None
    if proc.returncode != 0:
        raise CoverageError("cannot build the coverage runtime: "
                            + (proc.stderr.strip().splitlines() or ["gcc failed"])[-1])
    os.replace(tmp, lib)
    return lib


def build_instrumented(cache: Path | None = None, quiet: bool = True) -> Path:
    """The snd_be binary built with edge instrumentation (see the module docstring)."""
    from harness.peers.snd_be import SndBeFlags, build_snd_be

    lib = build_runtime(cache)
    # the runtime is linked by absolute path (no soname: DT_NEEDED keeps the path), and
    # --no-as-needed keeps it though the program names none of its symbols itself
    flags = SndBeFlags(cxx_flags=("-fsanitize-coverage=trace-pc",
                                  f"-Wl,--no-as-needed,{lib}"))
    return build_snd_be(cache=cache, flags=flags, quiet=quiet).binary


class EdgeCoverage:
    """The edges the backend processes of one supervisor reached (every life of the
    backend: a restart is a new process and a new map)."""

    def __init__(self, sup: Any) -> None:
        self.sup = sup
        self.pids: set[int] = set()
        self.union = np.zeros(MAP_SIZE, dtype=bool)
        self.count = 0

    def note(self) -> None:
        """Remember the backend's current processes (a life that dies before the next
        sample still counts, and its map is removed at the end)."""
        self.pids |= self._group_pids()

    def _group_pids(self) -> set[int]:
        proc = self.sup.proc
        if proc is None:
            return set()
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            return {proc.pid}
        found = {proc.pid}
        for path in glob.glob(MAP_PREFIX + "*"):
            try:
                pid = int(path[len(MAP_PREFIX):])
                if os.getpgid(pid) == pgid:
                    found.add(pid)
            except (ValueError, ProcessLookupError, PermissionError):
                continue
        return found

    def sample(self) -> int:
        """Read the maps; returns how many edges are new since the last sample."""
        self.note()
        before = self.count
        for pid in self.pids:
            try:
                data = Path(f"{MAP_PREFIX}{pid}").read_bytes()
            except OSError:
                continue
            hits = np.frombuffer(data, dtype=np.uint8)
            n = min(len(hits), MAP_SIZE)
            self.union[:n] |= hits[:n] != 0
        self.count = int(self.union.sum())
        return self.count - before

    @property
    def active(self) -> bool:
        return any(Path(f"{MAP_PREFIX}{pid}").exists() for pid in self.pids)

    def close(self) -> None:
        """The maps of our backend processes removed (they live in /dev/shm)."""
        self.sample()
        for pid in self.pids:
            try:
                os.unlink(f"{MAP_PREFIX}{pid}")
            except OSError:
                pass


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.fuzz.coverage",
                                description="Build snd_be with edge instrumentation and "
                                            "print the binary's path.")
    p.add_argument("--cache", type=Path, help="cache root (default ~/.cache/sndif-harness)")
    args = p.parse_args(argv)
    try:
        print(build_instrumented(args.cache, quiet=False))
    except Exception as exc:  # a build failure: one line, the log is named in it
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
