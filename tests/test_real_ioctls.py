"""ioctl numbers and structure layouts of the real-Xen devices, checked against the Linux
uapi headers (``xen/{gntalloc,gntdev,evtchn}.h``) with a small C program."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest
from requires import unavailable

from harness.xen.real import ioctls as I

HEADERS = ("xen/gntalloc.h", "xen/gntdev.h", "xen/evtchn.h")
STRUCT_FIELDS = {
    "ioctl_gntalloc_alloc_gref": ("domid", "flags", "count", "index", "gref_ids"),
    "ioctl_gntalloc_dealloc_gref": ("index", "count"),
    "ioctl_gntalloc_unmap_notify": ("index", "action", "event_channel_port"),
    "ioctl_gntdev_grant_ref": ("domid", "ref"),
    "ioctl_gntdev_map_grant_ref": ("count", "pad", "index", "refs"),
    "ioctl_gntdev_unmap_grant_ref": ("index", "count", "pad"),
    "ioctl_gntdev_set_max_grants": ("count",),
    "ioctl_gntdev_unmap_notify": ("index", "action", "event_channel_port"),
    "ioctl_evtchn_bind_interdomain": ("remote_domain", "remote_port"),
    "ioctl_evtchn_bind_unbound_port": ("remote_domain",),
    "ioctl_evtchn_unbind": ("port",),
    "ioctl_evtchn_notify": ("port",),
}
CONSTANTS = ("GNTALLOC_FLAG_WRITABLE", "UNMAP_NOTIFY_CLEAR_BYTE", "UNMAP_NOTIFY_SEND_EVENT")


def _skip_or_fail(why: str) -> None:
    unavailable(why)


@pytest.fixture(scope="module")
def c_values(tmp_path_factory) -> dict[str, int]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        _skip_or_fail("no C compiler to check the ioctl encodings")
    include = os.environ.get("XEN_UAPI_INCLUDE", "/usr/include")
    missing = [h for h in HEADERS if not os.path.exists(os.path.join(include, h))]
    if missing:
        _skip_or_fail(f"Linux uapi headers missing: {missing} (Debian: linux-libc-dev)")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <stdint.h>",
             "#include <sys/ioctl.h>", "typedef uint16_t domid_t;",
             "typedef uint32_t grant_ref_t;"]
    lines += [f"#include <{h}>" for h in HEADERS]
    lines.append("int main(void) {")
    for name in I.IOCTLS:
        lines.append(f'  printf("{name} %lu\\n", (unsigned long){name});')
    for c in CONSTANTS:
        lines.append(f'  printf("{c} %lu\\n", (unsigned long){c});')
    for s, fields in STRUCT_FIELDS.items():
        lines.append(f'  printf("sizeof.{s} %zu\\n", sizeof(struct {s}));')
        for f in fields:
            lines.append(f'  printf("offsetof.{s}.{f} %zu\\n", offsetof(struct {s}, {f}));')
    lines.append("  return 0;\n}")
    d = tmp_path_factory.mktemp("uapi")
    src, exe = d / "uapi.c", d / "uapi"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([cc, "-I", include, "-o", str(exe), str(src)], check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10)
    return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


@pytest.mark.parametrize("name", list(I.IOCTLS))
def test_ioctl_number_matches_header(c_values, name):
    assert I.IOCTLS[name][0] == c_values[name], f"{name}: {I.IOCTLS[name][0]:#x}"


@pytest.mark.parametrize("name", CONSTANTS)
def test_constants_match_header(c_values, name):
    assert getattr(I, name) == c_values[name]


@pytest.mark.parametrize("struct", list(STRUCT_FIELDS))
def test_structure_layout_matches_header(c_values, struct):
    cls = getattr(I, struct)
    assert ctypes.sizeof(cls) == c_values[f"sizeof.{struct}"]
    for f in STRUCT_FIELDS[struct]:
        assert getattr(cls, f).offset == c_values[f"offsetof.{struct}.{f}"], f


def test_known_numbers():
    # independent of the compiler: values worked out by hand from _IOC(_IOC_NONE, ...)
    assert I.IOCTL_EVTCHN_NOTIFY == (4 << 16) | (ord("E") << 8) | 4
    assert I.IOCTL_EVTCHN_RESET == (ord("E") << 8) | 5
    assert I.IOCTL_GNTDEV_MAP_GRANT_REF == (24 << 16) | (ord("G") << 8) | 0


def test_variable_size_arguments():
    arg = I.gntdev_map_grant_ref(3, [8, 9, 10])
    assert ctypes.sizeof(arg) == 16 + 3 * 8 and arg.count == 3
    assert [(r.domid, r.ref) for r in arg.refs] == [(3, 8), (3, 9), (3, 10)]
    raw = bytes(arg)
    assert raw[:4] == (3).to_bytes(4, "little") and raw[16:24] == bytes([3, 0, 0, 0,
                                                                         8, 0, 0, 0])
    alloc = I.gntalloc_alloc_gref(5)
    assert alloc.count == 5 and ctypes.sizeof(alloc) == 16 + 4 * 5 + 4  # padded to 8
    assert type(alloc).gref_ids.offset == I.ioctl_gntalloc_alloc_gref.gref_ids.offset
