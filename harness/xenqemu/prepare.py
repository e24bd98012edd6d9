"""``sndif-harness xen-qemu prepare``: Debian's Xen and kernel, unpacked, and the dom0 and
guest initramfs images, in a cache that is rebuilt only when a package version changes.

Layout of ``<cache root>/xen-qemu/<key>/`` (``<key>`` hashes every package version that
goes in, the host's busybox/ALSA/libc versions and this package's recipe files)::

    debs/          the downloaded .debs (kept: they are the record of what went in)
    root/          all of them unpacked with dpkg -x
    build/xen      the hypervisor (gunzipped: QEMU's multiboot loader takes the ELF)
    build/vmlinuz  the Debian kernel, dom0 and guest alike
    build/vmlinux  the same kernel's ELF, unpacked from it: Xen's and libxl's domain
                   builders then skip inflating it (XZ) under emulation, 6 s a domain
    build/dom0.cpio.gz, build/guest.cpio.gz
    build/signal.raw   the known signal the guest plays (S16_LE, 48 kHz, stereo)
    prepared.json  the versions, written last: its presence means the entry is complete

Nothing is installed into the host. The host's own ``busybox`` (busybox-static), ``aplay``
(alsa-utils) and the shared libraries ``ldd`` names are copied into the images.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.locks import exclusive
from harness.peers.snd_be import default_cache_root
from harness.xenqemu import INSTALL_HINT, EnvironmentMissing, XenQemuError, scripts

_HERE = Path(__file__).resolve().parent
# The recipe: a change to how images are built is a new cache entry.
RECIPE = hashlib.sha256(b"".join(
    (_HERE / name).read_bytes() for name in ("prepare.py", "scripts.py"))).hexdigest()[:16]

XEN_PACKAGES = (
    "xen-hypervisor-4.17-amd64", "xen-utils-4.17", "xen-utils-common", "xenstore-utils",
    "libxenmisc4.17", "libxenstore4", "libxencall1", "libxenevtchn1",
    "libxenforeignmemory1", "libxengnttab1", "libxentoollog1", "libxendevicemodel1",
    "libxenhypfs1", "libxentoolcore1", "libyajl2",
)
KERNEL_META = "linux-image-amd64"
XEN_LIBEXEC = "usr/lib/xen-4.17"
# host packages whose files are copied into the images: their versions are in the key
HOST_PACKAGES = ("busybox-static", "alsa-utils", "libasound2", "libc6", "libgcc-s1")

# kernel modules (relative to lib/modules/<kver>/kernel) both images carry: Xen's device
# drivers, the PV sound frontend and ALSA core, the loopback card that paces the backend's
# ALSA output in dom0, and virtio-9p (dom0 reaches the host through it)
MODULE_DIRS = ("drivers/xen", "sound/xen", "sound/core", "net/9p", "fs/9p", "fs/netfs",
               "fs/fscache", "drivers/virtio")
MODULE_FILES = ("sound/soundcore.ko", "sound/drivers/snd-aloop.ko",
                "sound/drivers/snd-dummy.ko")

#: The known signal's format (S16_LE) and how the guest plays it. 8 kHz mono: Linux's
#: frontend caps a stream's buffer at 64 KiB, which at 48 kHz stereo is 341 ms, less than
#: the stalls seen under emulation (an underrun breaks the stream, and aplay's recovery
#: re-sends audio); at 8 kHz mono the same 64 KiB hold 4 s, so the guest asks for a 2 s
#: buffer of 250 ms periods and keeps the backend fed through any stall shorter than that.
RATE, CHANNELS, SAMPLE_BYTES = 8000, 1, 2
FRAME_BYTES = CHANNELS * SAMPLE_BYTES
BUFFER_US, PERIOD_US = 2_000_000, 250_000
PERIOD_FRAMES = RATE * PERIOD_US // 1_000_000
MAX_SECONDS = 16
SIGNAL_SEED = 0x5D1F

STEP_TIMEOUT = 300.0  # seconds any one external command of the preparation may take
LOCK_TIMEOUT = 600.0


@dataclass(frozen=True)
class Prepared:
    dir: Path
    key: str
    kver: str
    versions: dict[str, str]
    built: bool  # this call built it (False: reused from the cache)

    @property
    def xen(self) -> Path:
        return self.dir / "build" / "xen"

    @property
    def vmlinuz(self) -> Path:
        return self.dir / "build" / "vmlinuz"

    @property
    def kernel(self) -> Path:
        """The kernel the domains boot: the unpacked ELF, or the bzImage when its
        compression is not one Python inflates."""
        elf = self.dir / "build" / "vmlinux"
        return elf if elf.exists() else self.vmlinuz

    @property
    def dom0_initrd(self) -> Path:
        return self.dir / "build" / "dom0.cpio.gz"

    @property
    def guest_initrd(self) -> Path:
        return self.dir / "build" / "guest.cpio.gz"

    @property
    def signal(self) -> Path:
        return self.dir / "build" / "signal.raw"


def known_signal(frames: int, seed: int = SIGNAL_SEED) -> bytes:
    """The first ``frames`` frames of the known signal: seeded noise, so a shifted, dropped
    or repeated block cannot compare equal by accident (silence or a tone could)."""
    return random.Random(seed).randbytes(MAX_SECONDS * RATE * FRAME_BYTES)[
        :frames * FRAME_BYTES]


def capture_signal(frames: int) -> bytes:
    """What the backend offers for capture: noise of another seed than the playback's."""
    return known_signal(frames, SIGNAL_SEED + 1)


# ------------------------------------------------------------------ host commands

def _run(stage: str, argv: list[str], *, cwd: Path | None = None,
         env: dict[str, str] | None = None, timeout: float = STEP_TIMEOUT) -> str:
    """Run one command; XenQemuError naming ``stage`` on failure or timeout."""
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise XenQemuError(stage, f"{argv[0]} timed out after {timeout:g} s") from None
    except FileNotFoundError:
        raise EnvironmentMissing(stage, f"{argv[0]} not found ({INSTALL_HINT})") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise XenQemuError(stage, f"{' '.join(argv[:4])} ... exit status "
                                  f"{proc.returncode}:\n{tail}")
    return proc.stdout


def missing_host_tools() -> list[str]:
    """Debian packages the host lacks for prepare + run (empty: none)."""
    need = {"qemu-system-x86_64": "qemu-system-x86", "cpio": "cpio", "aplay": "alsa-utils",
            "apt-get": "apt", "dpkg": "dpkg", "depmod": "kmod"}
    missing = [pkg for tool, pkg in need.items() if shutil.which(tool) is None]
    if not _busybox_static():
        missing.append("busybox-static")
    return missing


def _busybox_static() -> Path | None:
    # busybox-static installs /bin/busybox; a dynamic busybox would not run in an
    # initramfs without its libraries, so insist that ldd finds none
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(cand).is_file():
            try:
                out = subprocess.run(["ldd", cand], capture_output=True, text=True,
                                     timeout=30, check=False, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                return None
            if "=>" not in out.stdout:
                return Path(cand)
    return None


def _apt_show(stage: str, packages: Iterable[str]) -> dict[str, str]:
    out = _run(stage, ["apt-cache", "show", "--no-all-versions", *packages])
    versions: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1].strip()
        elif line.startswith("Version: ") and name is not None:
            versions.setdefault(name, line.split(": ", 1)[1].strip())
    return versions


def _kernel_package(stage: str) -> str:
    out = _run(stage, ["apt-cache", "depends", KERNEL_META])
    m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", out)
    if m is None:
        raise XenQemuError(stage, f"apt-cache depends {KERNEL_META} names no kernel image")
    return m.group(1)


def _host_versions(stage: str) -> dict[str, str]:
    out = _run(stage, ["dpkg-query", "-W", "-f", "${Package} ${Version}\n",
                       *HOST_PACKAGES])
    return {f"host:{a}": b for a, b in (ln.split(" ", 1) for ln in out.splitlines() if ln)}


def resolve_versions() -> dict[str, str]:
    """Every package version that goes into the images (apt's candidates + the host's)."""
    stage = "prepare/resolve"
    try:
        kernel = _kernel_package(stage)
        versions = _apt_show(stage, (*XEN_PACKAGES, kernel))
    except XenQemuError:
        # a machine that never ran apt-get update has no package lists: fetch them once
        _run(stage, ["apt-get", "update", "-qq"])
        kernel = _kernel_package(stage)
        versions = _apt_show(stage, (*XEN_PACKAGES, kernel))
    missing = [p for p in (*XEN_PACKAGES, kernel) if p not in versions]
    if missing:
        raise XenQemuError(stage, f"apt knows no {', '.join(missing)}")
    return {**versions, **_host_versions(stage)}


def versions_key(versions: dict[str, str]) -> str:
    text = json.dumps({"recipe": RECIPE, "versions": versions}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------- prepare

def prepare(cache: Path | None = None, *,
            say: Callable[[str], None] = lambda _s: None) -> Prepared:
    """The prepared images for today's package versions: reused, or built under a lock.
    Raises EnvironmentMissing (install something) or XenQemuError naming the stage."""
    missing = missing_host_tools()
    if missing:
        raise EnvironmentMissing("prepare/host-tools",
                                 f"missing {', '.join(sorted(set(missing)))} "
                                 f"(apt-get install {' '.join(sorted(set(missing)))})")
    t0 = time.monotonic()
    versions = resolve_versions()
    key = versions_key(versions)
    root = (cache if cache is not None else default_cache_root()) / "xen-qemu"
    final = root / key
    say(f"prepare/resolve: key {key} ({time.monotonic() - t0:.1f} s)")
    if (final / "prepared.json").exists():
        return _loaded(final, key, versions, built=False)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f"{key}.lock", LOCK_TIMEOUT,
                   lambda msg: XenQemuError("prepare/lock", msg)):
        if (final / "prepared.json").exists():
            return _loaded(final, key, versions, built=False)
        for stale in root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
        try:
            kver = _build_into(tmp, versions, say)
            (tmp / "prepared.json").write_text(json.dumps(
                {"key": key, "kver": kver, "versions": versions}, indent=1) + "\n")
            # the unpacked tree (~420 MB) only fed the images; the .debs stay as the record
            shutil.rmtree(tmp / "root")
            os.chmod(tmp, 0o755)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _prune(root, keep=key)
    return _loaded(final, key, versions, built=True)


def _prune(root: Path, keep: str) -> None:
    """Drop the entries of older package versions (or recipes): each is ~150 MB and none
    is used again. An entry whose lock another process holds is left alone."""
    for entry in root.iterdir():
        if entry.name == keep or not entry.is_dir() or entry.name.startswith(".tmp-"):
            continue
        lock = root / f"{entry.name}.lock"
        with open(lock, "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)


def _loaded(d: Path, key: str, versions: dict[str, str], built: bool) -> Prepared:
    kver = json.loads((d / "prepared.json").read_text())["kver"]
    return Prepared(dir=d, key=key, kver=kver, versions=versions, built=built)


def _timed(say: Callable[[str], None], stage: str) -> Callable[[], None]:
    t0 = time.monotonic()
    return lambda: say(f"{stage}: {time.monotonic() - t0:.1f} s")


def _build_into(tmp: Path, versions: dict[str, str], say: Callable[[str], None]) -> str:
    debs, unpacked, build = tmp / "debs", tmp / "root", tmp / "build"
    for d in (debs, unpacked, build):
        d.mkdir()
    done = _timed(say, "prepare/download")
    pkgs = [f"{p}={v}" for p, v in versions.items() if not p.startswith("host:")]
    _run("prepare/download", ["apt-get", "download", "-qq", *pkgs], cwd=debs)
    done()
    done = _timed(say, "prepare/unpack")
    for deb in sorted(debs.glob("*.deb")):
        _run("prepare/unpack", ["dpkg", "-x", str(deb), str(unpacked)])
    done()
    kvers = sorted(p.name for p in (unpacked / "lib/modules").iterdir())
    if len(kvers) != 1:
        raise XenQemuError("prepare/unpack", f"expected one kernel in lib/modules, "
                                             f"found {kvers}")
    kver = kvers[0]
    done = _timed(say, "prepare/xen-kernel")
    with gzip.open(unpacked / "boot/xen-4.17-amd64.gz") as src, \
            open(build / "xen", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copyfile(unpacked / f"boot/vmlinuz-{kver}", build / "vmlinuz")
    elf = vmlinux((build / "vmlinuz").read_bytes())
    if elf is not None:
        (build / "vmlinux").write_bytes(elf)
    signal = known_signal(MAX_SECONDS * RATE)
    (build / "signal.raw").write_bytes(signal)
    done()
    done = _timed(say, "prepare/guest-initramfs")
    guest = tmp / "guest-root"
    _base_tree(guest, unpacked, kver, "prepare/guest-initramfs")
    aplay = shutil.which("aplay")
    arecord = shutil.which("arecord")
    assert aplay is not None and arecord is not None  # missing_host_tools checked alsa-utils
    _copy_with_libs(guest, [Path(aplay), Path(arecord)], {}, "prepare/guest-initramfs")
    _copy_alsa_config(guest)
    (guest / "signal.raw").write_bytes(signal)
    _write_exec(guest / "init", scripts.guest_init(
        rate=RATE, channels=CHANNELS, buffer_us=BUFFER_US, period_us=PERIOD_US))
    _cpio(guest, build / "guest.cpio.gz", "prepare/guest-initramfs")
    shutil.rmtree(guest)
    done()
    done = _timed(say, "prepare/dom0-initramfs")
    dom0 = tmp / "dom0-root"
    _base_tree(dom0, unpacked, kver, "prepare/dom0-initramfs")
    _copy_xen_tools(dom0, unpacked)
    (dom0 / "guest").mkdir()
    shutil.copyfile(build / "vmlinuz", dom0 / "guest/vmlinuz")
    shutil.copyfile(build / "guest.cpio.gz", dom0 / "guest/initrd.gz")
    _write_exec(dom0 / "init", scripts.dom0_init())
    _cpio(dom0, build / "dom0.cpio.gz", "prepare/dom0-initramfs")
    shutil.rmtree(dom0)
    done()
    return kver


def vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage (Linux's boot protocol: the setup header's
    ``payload_offset``), or None when it is not an XZ or gzip payload holding an ELF."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    setup_sects = bzimage[0x1F1] or 4
    (offset,) = struct.unpack_from("<I", bzimage, 0x248)
    payload = bzimage[(setup_sects + 1) * 512 + offset:]
    inflate: lzma.LZMADecompressor | zlib._Decompress
    if payload.startswith(b"\xfd7zXZ\x00"):
        inflate = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    elif payload.startswith(b"\x1f\x8b"):
        inflate = zlib.decompressobj(wbits=31)
    else:
        return None
    try:
        elf = inflate.decompress(payload)
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if inflate.eof and elf.startswith(b"\x7fELF") else None


# -------------------------------------------------------------------- image trees

def _write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _base_tree(top: Path, unpacked: Path, kver: str, stage: str) -> None:
    """busybox, the directory skeleton and the kernel modules, with modules.dep."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "lib64",
              "etc", "proc", "sys", "dev", "run", "tmp", "mnt", "root", "var/lib",
              "var/log"):
        (top / d).mkdir(parents=True, exist_ok=True)
    os.symlink("usr/lib", top / "lib")  # Debian 12 is merged-/usr: ldd names /lib/...
    os.symlink("../run", top / "var/run")
    os.symlink("../run/lock", top / "var/lock")
    bb = _busybox_static()
    assert bb is not None
    shutil.copyfile(bb, top / "bin/busybox")
    (top / "bin/busybox").chmod(0o755)
    os.symlink("busybox", top / "bin/sh")
    with contextlib.suppress(PermissionError):
        # the kernel opens /dev/console before /init runs (devtmpfs is not mounted yet);
        # without it /init starts with no stdout. Creating it needs root.
        os.mknod(top / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    src = unpacked / "lib/modules" / kver
    dst = top / "usr/lib/modules" / kver
    for d in MODULE_DIRS:
        if (src / "kernel" / d).is_dir():
            shutil.copytree(src / "kernel" / d, dst / "kernel" / d)
    for f in MODULE_FILES:
        (dst / "kernel" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "kernel" / f, dst / "kernel" / f)
    for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        shutil.copyfile(src / f, dst / f)
    # busybox modprobe reads modules.dep; the host's depmod writes it for this tree
    _run(stage, ["depmod", "-b", str(top), kver])


def _ldd(stage: str, binary: Path, env: dict[str, str]) -> list[Path]:
    out = _run(stage, ["ldd", str(binary)], env={**os.environ, **env})
    libs = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" ")[0]
            if target.startswith("/"):
                libs.append(Path(target))
            elif "not found" in line:
                raise XenQemuError(stage, f"{binary.name}: {line}")
        elif line.startswith("/"):
            libs.append(Path(line.split(" ")[0]))  # the dynamic loader
    return libs


def _in_image(path: Path) -> Path:
    """Where a host path goes in an image: /lib/... is /usr/lib/... (merged /usr)."""
    rel = path.relative_to("/")
    if rel.parts[0] == "lib":
        rel = Path("usr", *rel.parts)
    return rel


def _copy_with_libs(top: Path, binaries: list[Path], env: dict[str, str], stage: str,
                    skip_under: Path | None = None) -> None:
    """Copy host ``binaries`` (unless already in the image) and the host libraries ldd
    names for them; libraries under ``skip_under`` (the unpacked tree) are already there."""
    for b in binaries:
        if not str(b).startswith(str(top)):
            dst = top / _in_image(b)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(b, dst)
            dst.chmod(0o755)
        for lib in _ldd(stage, b, env):
            if skip_under is not None and str(lib).startswith(str(skip_under)):
                continue
            dst = top / _in_image(lib)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                # follows symlinks (the soname gets the file) and keeps the mode: the
                # dynamic loader must stay executable or every exec is EACCES
                shutil.copy(lib, dst)


def _copy_alsa_config(top: Path) -> None:
    # alsa.conf defines hw:<card>,<dev>; the use-case and topology trees are not needed
    src = Path("/usr/share/alsa")
    shutil.copytree(src, top / "usr/share/alsa", symlinks=True,
                    ignore=shutil.ignore_patterns("ucm", "ucm2", "topology"))


def _copy_xen_tools(top: Path, unpacked: Path) -> None:
    shutil.copytree(unpacked / XEN_LIBEXEC, top / XEN_LIBEXEC, symlinks=True)
    arch = "usr/lib/x86_64-linux-gnu"
    for lib in (unpacked / arch).iterdir():
        shutil.copy2(lib, top / arch / lib.name, follow_symlinks=False)
    for tool in (unpacked / "usr/bin").glob("xenstore*"):
        shutil.copy2(tool, top / "usr/bin" / tool.name, follow_symlinks=False)
    (top / "etc/xen").mkdir(parents=True)
    shutil.copyfile(unpacked / "etc/xen/xl.conf", top / "etc/xen/xl.conf")
    stage = "prepare/dom0-initramfs"
    env = {"LD_LIBRARY_PATH": f"{unpacked / arch}:{unpacked / XEN_LIBEXEC / 'lib'}"}
    bins = [top / XEN_LIBEXEC / "bin" / n for n in
            ("xl", "xenstored", "xenconsoled", "xen-init-dom0")]
    bins.append(top / "usr/bin/xenstore")
    _copy_with_libs(top, [b for b in bins if b.exists()], env, stage, skip_under=unpacked)
    # glibc dlopen()s libgcc_s for pthread_cancel: ldd cannot see it, and without it xl
    # aborts at exit (rc 134) although the domain was created
    gcc_s = Path("/lib/x86_64-linux-gnu/libgcc_s.so.1")
    shutil.copy(gcc_s, top / _in_image(gcc_s))


def _cpio(top: Path, out: Path, stage: str) -> None:
    # level 1: the images are unpacked under TCG, where a smaller file saves little
    with gzip.open(out, "wb", compresslevel=1) as f:
        f.write(cpio_archive(top, stage))


def cpio_archive(top: Path, stage: str) -> bytes:
    """The tree under ``top`` as one newc cpio archive."""
    names = [".", *sorted(str(p.relative_to(top)) for p in top.rglob("*"))]
    try:
        proc = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=top,
                              input="\n".join(names).encode() + b"\n",
                              capture_output=True, timeout=STEP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise XenQemuError(stage, f"cpio timed out after {STEP_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        raise XenQemuError(stage, f"cpio failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout
