"""Build xen-troops' ``snd_be`` (on ``libxenbe``) from the shared peers' tarballs.

    build = build_snd_be()          # builds once, then reuses
    run_as_domain([str(build.binary), "-v", "*:Debug"], runner=sim)

The tarballs are found in the peers directory (``$SNDIF_PEERS_DIR``, else ``shared/peers``
beside the repository). The build goes to ``<cache>/peers/<key>/`` where ``<cache>`` is
``$SNDIF_HARNESS_CACHE`` (else ``$XDG_CACHE_HOME/sndif-harness``, else
``~/.cache/sndif-harness``) and ``<key>`` hashes both tarballs, the build flags and this
file (the recipe), so a changed tarball, flag or recipe builds afresh and anything else
reuses. Builders of one key are
serialized by an ``flock`` and each builds in a private temporary directory renamed into
place: a caller sees a complete build or none.

The binary finds its ``libxenbe.so`` through a relative RUNPATH (``$ORIGIN``), so the
renamed tree works and ``LD_LIBRARY_PATH`` stays free for the sim's replacement Xen
libraries (which it must win over Debian's: RUNPATH is searched after it).

``python -m harness.peers.snd_be`` prints the binary's path, building it if needed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import harness
from harness.locks import exclusive

# This file is the build's recipe: any change to it (commands, flags, layout) is a new key.
RECIPE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
LOCK_TIMEOUT = 900.0  # seconds to wait for another process's build of the same key
STEP_TIMEOUT = 900.0  # seconds one configure/build step may take
LOG_TAIL_LINES = 25

# the two tarballs, by role: glob pattern in the peers directory
TARBALLS = {"libxenbe": "libxenbe-*.tar.gz", "snd_be": "snd_be-*.tar.gz"}

# layout of a build directory (relative to it)
LIBXENBE_LIB = Path("build/libxenbe/src")
BINARY = Path("build/snd_be/src/snd_be")
LOG = Path("build.log")
STAMP = Path("build.json")


class PeersError(RuntimeError):
    """Bad peers directory, or a prerequisite of the build is missing."""


class PeersBuildError(PeersError):
    """A build step failed: ``step`` names it, ``log`` holds its full output."""

    def __init__(self, message: str, step: str, log: Path) -> None:
        super().__init__(message)
        self.step = step
        self.log = log


@dataclass(frozen=True)
class SndBeFlags:
    """What goes into the build besides the sources (all of it is in the cache key)."""

    build_type: str = "Debug"  # Debug keeps libxenbe's debug logging (see peers/README.md)
    pulse: bool = True
    alsa: bool = True
    cxx_flags: tuple[str, ...] = ()  # e.g. ("-fsanitize=address",) for an ASan build

    def output_args(self) -> list[str]:
        """snd_be's cmake options selecting its audio outputs."""
        return [f"-DWITH_PULSE={'ON' if self.pulse else 'OFF'}",
                f"-DWITH_ALSA={'ON' if self.alsa else 'OFF'}"]


@dataclass(frozen=True)
class Tarballs:
    libxenbe: Path
    snd_be: Path

    def hashes(self) -> dict[str, str]:
        """sha256 of each tarball, by file name."""
        return {p.name: _sha256(p) for p in (self.libxenbe, self.snd_be)}


@dataclass(frozen=True)
class SndBeBuild:
    binary: Path  # the snd_be executable
    libxenbe_dir: Path  # holds libxenbe.so (the binary's RUNPATH points here already)
    log: Path  # the output of every build step
    hashes: dict[str, str]  # sha256 of each tarball, by file name
    key: str  # the cache key (also the build directory's name)
    flags: SndBeFlags = field(default_factory=SndBeFlags)
    built: bool = False  # True when this call built it, False when an earlier build is reused

    @property
    def dir(self) -> Path:
        return self.binary.parents[len(BINARY.parts) - 1]


# ------------------------------------------------------------------------ inputs


def default_peers_dir() -> Path:
    """``$SNDIF_PEERS_DIR``, else ``shared/peers`` beside the repository's root."""
    env = os.environ.get("SNDIF_PEERS_DIR")
    if env:
        return Path(env)
    return Path(harness.__file__).resolve().parents[2] / "shared" / "peers"


def default_cache_root() -> Path:
    env = os.environ.get("SNDIF_HARNESS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sndif-harness"


def find_tarballs(peers_dir: Path | None = None) -> Tarballs:
    """The libxenbe and snd_be tarballs of ``peers_dir``; PeersError unless there is exactly
    one of each."""
    where = peers_dir if peers_dir is not None else default_peers_dir()
    how = "" if peers_dir is not None or not os.environ.get("SNDIF_PEERS_DIR") \
        else " (from SNDIF_PEERS_DIR)"
    if not where.is_dir():
        raise PeersError(f"peers directory {where}{how} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for role, pattern in TARBALLS.items():
        matches = sorted(where.glob(pattern))
        if len(matches) != 1:
            what = "no" if not matches else f"{len(matches)} files matching"
            raise PeersError(f"peers directory {where}{how}: {what} {pattern} "
                             f"(expected exactly one)")
        found[role] = matches[0]
    return Tarballs(**found)


def cache_key(hashes: dict[str, str], flags: SndBeFlags) -> str:
    """The build directory's name: changes with either tarball or any flag."""
    text = json.dumps({"recipe": RECIPE, "tarballs": hashes, "flags": asdict(flags)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ prerequisites

_TOOLS = {"cmake": "cmake", "g++": "g++", "make": "make", "pkg-config": "pkg-config"}


def missing_packages(flags: SndBeFlags | None = None) -> list[str]:
    """Debian packages to install before a build can work (empty: none missing)."""
    flags = flags or SndBeFlags()
    missing = [pkg for tool, pkg in _TOOLS.items() if shutil.which(tool) is None]
    if shutil.which("pkg-config") is None:
        return missing  # cannot tell which dev packages are there; pkg-config comes first
    modules = {"libxen-dev": ["xenstore", "xencontrol", "xenevtchn", "xengnttab"]}
    if flags.alsa:
        modules["libasound2-dev"] = ["alsa"]
    if flags.pulse:
        modules["libpulse-dev"] = ["libpulse"]
    for pkg, mods in modules.items():
        ok = subprocess.run(["pkg-config", "--exists", *mods], check=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if ok.returncode != 0:
            missing.append(pkg)
    return missing


def check_prerequisites(flags: SndBeFlags | None = None) -> None:
    missing = missing_packages(flags)
    if missing:
        raise PeersError(f"cannot build snd_be: missing {', '.join(missing)} "
                         f"(apt-get install {' '.join(missing)})")


# -------------------------------------------------------------------------- build


def build_snd_be(peers_dir: Path | None = None, cache: Path | None = None, *,
                 flags: SndBeFlags | None = None, quiet: bool = True) -> SndBeBuild:
    """The snd_be build for the peers' tarballs and ``flags``: reused when the cache holds
    it, else built (libxenbe, then snd_be) under a lock. ``cache`` replaces the cache root
    (the build lands in ``cache/peers/<key>``). Raises PeersError for a bad peers directory
    or a missing package, PeersBuildError naming the failing step with its log's tail."""
    flags = flags or SndBeFlags()
    tarballs = find_tarballs(peers_dir)
    hashes = tarballs.hashes()
    key = cache_key(hashes, flags)
    root = (cache if cache is not None else default_cache_root()) / "peers"
    final = root / key
    if (final / STAMP).exists():
        return _result(final, hashes, key, flags, built=False)
    check_prerequisites(flags)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f"{key}.lock", LOCK_TIMEOUT, PeersError):
        if (final / STAMP).exists():  # another process built it while we waited
            return _result(final, hashes, key, flags, built=False)
        for stale in root.glob(f".tmp-{key}-*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # damaged by hand (no stamp): rebuild it whole
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
        try:
            _build_into(tmp, final, tarballs, hashes, flags, quiet)
            os.chmod(tmp, 0o755)  # mkdtemp made it private; a cache entry is not
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _result(final, hashes, key, flags, built=True)


def _result(dir: Path, hashes: dict[str, str], key: str, flags: SndBeFlags,
            built: bool) -> SndBeBuild:
    return SndBeBuild(binary=dir / BINARY, libxenbe_dir=dir / LIBXENBE_LIB, log=dir / LOG,
                      hashes=hashes, key=key, flags=flags, built=built)


def _extract(tarball: Path, into: Path) -> Path:
    """Unpack ``tarball`` under ``into``; its single top-level directory."""
    into.mkdir(parents=True)
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise PeersError(f"cannot unpack {tarball}: {exc}") from exc
    tops = [p for p in into.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise PeersError(f"{tarball}: expected one top-level directory, found {len(tops)}")
    return tops[0]


def _build_into(tmp: Path, final: Path, tarballs: Tarballs, hashes: dict[str, str],
                flags: SndBeFlags, quiet: bool) -> None:
    started = time.monotonic()
    xenbe_src = _extract(tarballs.libxenbe, tmp / "src" / "libxenbe")
    sndbe_src = _extract(tarballs.snd_be, tmp / "src" / "snd_be")
    xenbe_build, sndbe_build = tmp / "build" / "libxenbe", tmp / "build" / "snd_be"
    # debug info and __FILE__ name the final directory, not this temporary one
    cxx = " ".join((f"-ffile-prefix-map={tmp}={final}", *flags.cxx_flags))
    common = [f"-DCMAKE_BUILD_TYPE={flags.build_type}", f"-DCMAKE_CXX_FLAGS={cxx}"]
    # the binary finds libxenbe.so relative to itself, so the tree may be renamed
    rpath = os.path.relpath(tmp / LIBXENBE_LIB, (tmp / BINARY).parent)
    steps: list[tuple[str, list[str]]] = [
        ("libxenbe configure", ["cmake", "-S", str(xenbe_src), "-B", str(xenbe_build),
                                *common, "-DWITH_TEST=OFF"]),
        ("libxenbe build", ["cmake", "--build", str(xenbe_build), "-j2"]),
        ("snd_be configure", ["cmake", "-S", str(sndbe_src), "-B", str(sndbe_build), *common,
                              *flags.output_args(),
                              f"-DXENBE_INCLUDE_PATH={xenbe_src / 'include'}",
                              f"-DXENBE_LIB_PATH={tmp / LIBXENBE_LIB}",
                              "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
                              f"-DCMAKE_INSTALL_RPATH=$ORIGIN/{rpath}"]),
        ("snd_be build", ["cmake", "--build", str(sndbe_build), "-j2"]),
    ]
    log = tmp / LOG
    # the build directory goes on failure: its log is kept beside it
    kept = final.with_name(f"{final.name}.failed.log")
    for step, argv in steps:
        if not quiet:
            print(f"snd_be: {step}", file=sys.stderr, flush=True)
        _run_step(step, argv, log, kept)
    binary = tmp / BINARY
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        shutil.copyfile(log, kept)
        raise PeersBuildError(f"snd_be build failed at step 'snd_be build': it left no "
                              f"executable at {BINARY}; full log: {kept}", "snd_be build", kept)
    stamp = {"recipe": RECIPE, "tarballs": hashes, "flags": asdict(flags),
             "seconds": round(time.monotonic() - started, 1)}
    (tmp / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")


def _run_step(step: str, argv: Sequence[str], log: Path, kept: Path) -> None:
    """Run one step, its output appended to ``log``; on failure copy the log to ``kept``
    and raise PeersBuildError with its tail."""
    with open(log, "ab") as out:
        out.write(f"==== {step}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "LC_ALL": "C"})
        try:
            rc: int | None = proc.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        except BaseException:  # Ctrl-C: make and the compilers go too
            _kill_group(proc)
            raise
    if rc == 0:
        return
    shutil.copyfile(log, kept)
    tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    why = f"timed out after {STEP_TIMEOUT:g} s" if rc is None else f"exit status {rc}"
    raise PeersBuildError(f"snd_be build failed at step '{step}' ({why}); full log: {kept}\n"
                          + "\n".join(tail), step, kept)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


# ---------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.peers.snd_be",
                                description="Print the path of the snd_be binary built "
                                            "from the peers' tarballs (building it if "
                                            "needed).")
    p.add_argument("--peers-dir", type=Path, help="where the tarballs are "
                   "(default: $SNDIF_PEERS_DIR, else shared/peers beside the repository)")
    p.add_argument("--cache", type=Path, help="cache root (default: $SNDIF_HARNESS_CACHE, "
                   "else ~/.cache/sndif-harness)")
    p.add_argument("--build-type", default="Debug", help="CMAKE_BUILD_TYPE (default Debug)")
    p.add_argument("--no-pulse", action="store_true", help="ALSA output only")
    p.add_argument("--libdir", action="store_true", help="print libxenbe's directory too")
    args = p.parse_args(argv)
    flags = SndBeFlags(build_type=args.build_type, pulse=not args.no_pulse)
    try:
        build = build_snd_be(args.peers_dir, args.cache, flags=flags, quiet=False)
    except PeersBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except PeersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(build.binary)
    if args.libdir:
        print(build.libxenbe_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
