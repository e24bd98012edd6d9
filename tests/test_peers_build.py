"""Building snd_be (xen-troops' sndif backend) from the shared peers' tarballs: the real
build once per session into a private cache, reuse without rebuilding, a cache key that
follows the tarballs and the flags, serialized concurrent builders, and clear errors.

Fake tarballs (a few lines of CMake each) exercise the build machinery in a second each;
only the session fixture builds the real thing. Needs cmake, g++, pkg-config, libxen-dev,
libasound2-dev and libpulse-dev: skipped without them, except under CI=true.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from requires import unavailable

import harness
from harness.peers import snd_be
from harness.peers.snd_be import (
    PeersBuildError,
    PeersError,
    SndBeFlags,
    build_snd_be,
    cache_key,
    find_tarballs,
)

REPO = Path(harness.__file__).resolve().parents[1]


def need_build_tools(flags: SndBeFlags | None = None) -> None:
    missing = snd_be.missing_packages(flags)
    if missing:
        unavailable(f"cannot build snd_be: apt-get install {' '.join(missing)}")


@pytest.fixture(scope="session")
def real_peers() -> Path:
    try:
        find_tarballs()
    except PeersError as exc:
        unavailable(str(exc))
    return snd_be.default_peers_dir()


@pytest.fixture(scope="session")
def real_build(real_peers: Path) -> snd_be.SndBeBuild:
    """The real build, in the default cache that every user of snd_be shares: built at most
    once per session (once per machine until a tarball or the recipe changes). Building
    from nothing is what the fake tarballs below exercise."""
    need_build_tools()
    return build_snd_be(real_peers)


# --- fake tarballs -------------------------------------------------------------------------

FAKE_XENBE = """\
cmake_minimum_required(VERSION 3.13)
project(fake_xenbe NONE)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/src)
if(DEFINED ENV{FAKE_BUILD_COUNTER})
  file(APPEND $ENV{FAKE_BUILD_COUNTER} "configured\\n")
endif()
if(DEFINED ENV{FAKE_BUILD_SLEEP})
  execute_process(COMMAND sleep $ENV{FAKE_BUILD_SLEEP})
endif()
"""

FAKE_SNDBE = """\
cmake_minimum_required(VERSION 3.19)
project(fake_snd_be NONE)
file(WRITE ${CMAKE_BINARY_DIR}/src/snd_be "#!/bin/sh\\necho fake snd_be\\n")
file(CHMOD ${CMAKE_BINARY_DIR}/src/snd_be PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
"""

FAILING_SNDBE = """\
cmake_minimum_required(VERSION 3.13)
message(FATAL_ERROR "this fake snd_be refuses to configure")
"""


def make_tarball(path: Path, top: str, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_peers(where: Path, sndbe: str = FAKE_SNDBE) -> Path:
    where.mkdir(parents=True)
    make_tarball(where / "libxenbe-fake.tar.gz", "libxenbe-fake",
                 {"CMakeLists.txt": FAKE_XENBE})
    make_tarball(where / "snd_be-fake.tar.gz", "snd_be-fake", {"CMakeLists.txt": sndbe})
    return where


def leftovers(cache: Path) -> list[str]:
    """Temporary build directories still in the cache."""
    return [p.name for p in (cache / "peers").glob(".tmp-*")]


# --- the real build ------------------------------------------------------------------------

@pytest.mark.slow
def test_real_build_gives_a_runnable_snd_be_with_its_libxenbe(real_build, real_peers):
    b = real_build
    assert b.binary.is_file() and os.access(b.binary, os.X_OK)
    assert (b.libxenbe_dir / "libxenbe.so").is_file()
    assert b.log.is_file() and "snd_be build" in b.log.read_text()
    for name, digest in b.hashes.items():
        assert hashlib.sha256((real_peers / name).read_bytes()).hexdigest() == digest
    # It runs without LD_LIBRARY_PATH: libxenbe.so is found relative to the binary (and the
    # build directory was renamed after the build, so no absolute build path may remain).
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run([str(b.binary), "-h"], env=env, capture_output=True, text=True,
                         timeout=10)
    assert "Usage:" in out.stdout, out.stderr
    # debug info names the final directory, never the temporary one it was built in
    assert f".tmp-{b.key}".encode() not in b.binary.read_bytes()
    assert not leftovers(b.dir.parents[1])


@pytest.mark.slow
def test_second_call_reuses_the_build_without_rebuilding(real_build, real_peers):
    mtime = real_build.binary.stat().st_mtime_ns
    again = build_snd_be(real_peers, real_build.dir.parents[1])
    assert not again.built
    assert again.binary == real_build.binary and again.key == real_build.key
    assert again.binary.stat().st_mtime_ns == mtime


# --- the cache key -------------------------------------------------------------------------

def test_cache_key_follows_each_tarball_and_every_flag(real_peers, tmp_path):
    tb = find_tarballs(real_peers)
    base = cache_key(tb.hashes(), SndBeFlags())
    copy = tmp_path / "peers"
    copy.mkdir()
    for p in (tb.libxenbe, tb.snd_be):
        (copy / p.name).write_bytes(p.read_bytes())
    same = find_tarballs(copy)
    assert cache_key(same.hashes(), SndBeFlags()) == base  # content, not location
    for role in ("libxenbe", "snd_be"):
        changed = tmp_path / role
        changed.mkdir()
        for p in (tb.libxenbe, tb.snd_be):
            data = p.read_bytes()
            if p == getattr(tb, role):
                data += b"\0"  # one byte more: another tarball
            (changed / p.name).write_bytes(data)
        assert cache_key(find_tarballs(changed).hashes(), SndBeFlags()) != base, role
    for flags in (SndBeFlags(build_type="Release"), SndBeFlags(pulse=False),
                  SndBeFlags(alsa=False), SndBeFlags(cxx_flags=("-fsanitize=address",))):
        assert cache_key(tb.hashes(), flags) != base, flags


def test_changed_flags_build_beside_the_old_build(tmp_path):
    need_build_tools()
    peers, cache = fake_peers(tmp_path / "peers"), tmp_path / "cache"
    debug = build_snd_be(peers, cache)
    release = build_snd_be(peers, cache, flags=SndBeFlags(build_type="Release"))
    assert debug.built and release.built and debug.dir != release.dir
    assert debug.binary.is_file() and release.binary.is_file()
    assert not build_snd_be(peers, cache).built
    out = subprocess.run([str(debug.binary)], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "fake snd_be"


# --- concurrency ---------------------------------------------------------------------------

def test_concurrent_builders_build_once_and_both_get_the_build(tmp_path):
    need_build_tools()
    peers, cache = fake_peers(tmp_path / "peers"), tmp_path / "cache"
    counter = tmp_path / "configured.txt"
    env = {**os.environ, "FAKE_BUILD_COUNTER": str(counter), "FAKE_BUILD_SLEEP": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "harness.peers.snd_be", "--peers-dir", str(peers),
            "--cache", str(cache)]
    procs = [subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1 and Path(paths.pop()).is_file()
    assert counter.read_text().count("configured") == 1  # the second one waited, then reused
    assert not leftovers(cache)


# --- errors --------------------------------------------------------------------------------

def test_a_failing_step_is_named_with_its_log_and_leaves_no_build(tmp_path):
    need_build_tools()
    peers = fake_peers(tmp_path / "peers", sndbe=FAILING_SNDBE)
    cache = tmp_path / "cache"
    with pytest.raises(PeersBuildError) as info:
        build_snd_be(peers, cache)
    err = info.value
    assert err.step == "snd_be configure"
    assert "failed at step 'snd_be configure'" in str(err)
    assert "this fake snd_be refuses to configure" in str(err)  # the log's tail
    assert err.log.is_file() and "refuses to configure" in err.log.read_text()
    key_dirs = [p for p in (cache / "peers").iterdir() if p.is_dir()]
    assert key_dirs == [] and not leftovers(cache)


@pytest.mark.parametrize("layout, message", [
    (None, "does not exist"),
    ([], "no libxenbe-*.tar.gz"),
    (["libxenbe-a.tar.gz"], "no snd_be-*.tar.gz"),
    (["libxenbe-a.tar.gz", "snd_be-a.tar.gz", "snd_be-b.tar.gz"], "2 files matching"),
])
def test_a_bad_peers_dir_is_a_clear_error(tmp_path, layout, message):
    peers = tmp_path / "peers"
    if layout is not None:
        peers.mkdir()
        for name in layout:
            (peers / name).write_bytes(b"x")
    with pytest.raises(PeersError, match=re.escape(message)) as info:
        build_snd_be(peers, tmp_path / "cache")
    assert str(peers) in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_sndif_peers_dir_names_the_default_and_is_named_when_wrong(tmp_path, monkeypatch):
    peers = fake_peers(tmp_path / "peers")
    monkeypatch.setenv("SNDIF_PEERS_DIR", str(peers))
    assert find_tarballs().snd_be == peers / "snd_be-fake.tar.gz"
    monkeypatch.setenv("SNDIF_PEERS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(PeersError, match="from SNDIF_PEERS_DIR"):
        find_tarballs()


def test_cli_bad_peers_dir_is_one_line_and_status_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "harness.peers.snd_be", "--peers-dir",
                          str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "Traceback" not in res.stderr


def test_missing_build_tools_name_the_packages_to_install(tmp_path, monkeypatch):
    peers = fake_peers(tmp_path / "peers")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cmake, g++, make, pkg-config
    missing = snd_be.missing_packages()
    assert {"cmake", "g++", "pkg-config"} <= set(missing)
    with pytest.raises(PeersError, match=r"apt-get install cmake g\+\+") as info:
        build_snd_be(peers, tmp_path / "cache")
    assert not isinstance(info.value, PeersBuildError)


def test_missing_dev_packages_are_named(tmp_path, monkeypatch):
    need_build_tools()
    # pkg-config finds nothing when its search path is empty: every -dev package is missing
    monkeypatch.setenv("PKG_CONFIG_LIBDIR", str(tmp_path))
    monkeypatch.delenv("PKG_CONFIG_PATH", raising=False)
    assert snd_be.missing_packages() == ["libxen-dev", "libasound2-dev", "libpulse-dev"]
    assert snd_be.missing_packages(SndBeFlags(pulse=False)) == ["libxen-dev",
                                                                "libasound2-dev"]
