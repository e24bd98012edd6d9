"""The PV guest image for the harness's own frontend (``xen-qemu run --frontend
reference``): the prepared guest's initramfs (busybox, the kernel's Xen modules,
``/signal.raw``) followed by a second cpio archive holding this host's Python (the
interpreter, the libraries ``ldd`` names, the standard library with its bytecode), the
site-packages the harness imports, the project's own packages (compiled here: bytecode
compiled under emulation would cost minutes) and an ``/init`` that runs
:mod:`harness.xenqemu.guest_scenario`. Linux unpacks concatenated archives in order, a
later file replacing an earlier one (``/init``); the two are one gzip stream. Built for
each run, since the project's code is the run's own; it takes a few seconds.
"""

from __future__ import annotations

import compileall
import gzip
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from harness.xenqemu import XenQemuError, scripts
from harness.xenqemu.prepare import (
    Prepared,
    _copy_with_libs,
    _in_image,
    _write_exec,
    cpio_archive,
)

STAGE = "guest-image"
#: where the guest finds the project and its site-packages
SRC, SITE = "/sndif/src", "/sndif/site"
#: the project's parts the guest imports (the suites too: a certification runs there)
PACKAGES = ("harness", "protocol_models", "suites")
PROJECT = (*PACKAGES, "conftest.py", "pyproject.toml")
#: the site-packages the harness imports (what a certification run loads, less what
#: only the host's tools use: plotting, type checking, the Allure server)
SITE_PACKAGES = ("_pytest", "pytest", "py.py", "pluggy", "iniconfig", "packaging", "attr",
                 "attrs", "hypothesis", "_hypothesis_globals.py",
                 "_hypothesis_pytestplugin.py", "sortedcontainers", "scapy", "allure",
                 "allure_commons", "allure_pytest", "pyxs", "typing_extensions.py",
                 "pygments")
#: their distributions' metadata (pytest finds its plugins through the entry points)
DISTRIBUTIONS = ("pytest", "pluggy", "iniconfig", "packaging", "attrs", "hypothesis",
                 "sortedcontainers", "scapy", "allure_pytest", "allure_python_commons",
                 "pyxs", "typing_extensions", "pygments")
#: the standard library's parts no run of the harness imports
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
               "pydoc_data", "distutils", "venv", "site-packages", "dist-packages")
#: (and config-3.11-<arch>: the static library and Makefile for building extensions)
MEMORY_MB = 768  # the guest's: the image unpacked (~150 MB) and the interpreter
#: its kernel's console level: 7 shows where a process died of a signal ("segfault at")
LOGLEVEL = 7


def python_command(argv: list[str]) -> str:
    """The shell line of /init that runs the guest's Python with ``argv``, in the project."""
    args = " ".join(shlex.quote(a) for a in argv)
    return (f"cd {SRC} && env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH={SRC}:{SITE} "
            f"PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 COLUMNS=120 /usr/bin/python3 {args}")


#: what the guest runs by default: the scenario of the aplay guest
SCENARIO = python_command(["-m", "harness.xenqemu.guest_scenario", "--signal",
                           "/signal.raw"]) + "\ng python rc=$?"


def guest_init(command: str = SCENARIO) -> str:
    """The guest's /init: the Xen devices a frontend needs, then ``command`` (shell, with
    ``g`` to print a marker)."""
    return scripts.GUEST_START + rf"""
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
for m in xenfs xen-evtchn xen-gntalloc xen-gntdev; do
  modprobe $m || g fail modprobe $m
done
mount -t xenfs xenfs /proc/xen || g fail mount xenfs
{command}
g done
sync
poweroff -f
"""


def guest_cfg(image: Path, frames: int, unique_id: str, rate: int,
              capture_id: str | None = None, plays: int = 1, *, vsnd: str | None = None) -> str:
    """xl's configuration of the Python guest, ``image`` in the out share (dom0's /out)."""
    return scripts.guest_cfg(frames, unique_id, rate, capture_id, plays,
                             ramdisk=f"/out/{image.name}", memory=MEMORY_MB,
                             loglevel=LOGLEVEL, vsnd=vsnd)


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        # copy2 keeps the mtimes the bytecode was checked against
        # (only plain bytecode is loaded: the -O variants would double its size)
        shutil.copytree(src, dst, symlinks=True,
                        ignore=shutil.ignore_patterns("*.opt-1.pyc", "*.opt-2.pyc"))
    else:
        shutil.copy2(src, dst)


def _strip(top: Path) -> None:
    """Debugging symbols out of the shared objects (a self-built interpreter's
    libpython keeps them: 23 MB of the image, every byte unpacked under emulation)."""
    strip = shutil.which("strip")
    if strip is None:
        return
    objs = [str(f) for f in top.rglob("*.so*") if f.is_file() and not f.is_symlink()]
    if objs:
        subprocess.run([strip, "--strip-debug", *objs], capture_output=True, timeout=300,
                       check=False)


def build(p: Prepared, out: Path, command: str = SCENARIO) -> Path:
    """``out``/guest-reference.cpio.gz: the prepared guest image plus the Python one,
    whose /init runs ``command``."""
    root = project_root()
    missing = [name for name in PROJECT if not (root / name).exists()]
    if missing:
        raise XenQemuError(STAGE, f"the project at {root} lacks {', '.join(missing)}")
    python = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = _site_packages()
    with tempfile.TemporaryDirectory(prefix="sndif-guest-") as tmp:
        top = Path(tmp) / "root"
        for name in (n for n in os.listdir(stdlib)
                     if n not in STDLIB_SKIP and not n.startswith("config-")):
            _copy(stdlib / name, top / _in_image(stdlib) / name)
        for name in SITE_PACKAGES:
            if (site / name).exists():
                _copy(site / name, top / SITE.lstrip("/") / name)
        for dist in site.glob("*.dist-info"):
            if dist.name.split("-", 1)[0].lower() in DISTRIBUTIONS:
                _copy(dist, top / SITE.lstrip("/") / dist.name)
        for name in PROJECT:
            _copy(root / name, top / SRC.lstrip("/") / name)
        src = top / SRC.lstrip("/")
        for name in PACKAGES:
            if not compileall.compile_dir(src / name, quiet=2, workers=0,
                                          ddir=f"{SRC}/{name}"):
                raise XenQemuError(STAGE, f"the project's {name} does not compile")
        # the interpreter, and every library it or an extension module loads
        dynload = sorted(f for f in top.rglob("*.so") if f.is_file())  # stdlib's, site's
        _copy_with_libs(top, [python, *dynload], {}, STAGE)
        # at the host's own path, so that it finds its standard library where it looks
        # for it; /usr/bin/python3 for the guest's /init
        (top / "usr/bin").mkdir(parents=True, exist_ok=True)
        os.symlink(python, top / "usr/bin/python3")
        # glibc dlopen()s libgcc_s to end a thread (pthread_exit): ldd cannot see it
        gcc_s = Path("/lib/x86_64-linux-gnu/libgcc_s.so.1")
        shutil.copy(gcc_s, top / _in_image(gcc_s))
        _strip(top)
        _write_exec(top / "init", guest_init(command))
        extra = cpio_archive(top, STAGE)
    # one gzip stream of the two archives: Xen's domain builder inflates a PV guest's
    # ramdisk itself, the first gzip member only (a second one would be dropped)
    image = out / "guest-reference.cpio.gz"
    with gzip.open(p.guest_initrd) as base, gzip.open(image, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(base, dst)
        dst.write(extra)
    return image
