"""The ELF kernel the real-Xen tier boots, unpacked from Debian's bzImage at preparation
(Xen's and libxl's domain builders would otherwise inflate its XZ under emulation, ~6 s a
domain): the payload found through the boot protocol's setup header, XZ or gzip, and
nothing (the bzImage used as it is) for anything else."""

from __future__ import annotations

import gzip
import lzma
import struct

import pytest

from harness.xenqemu.prepare import vmlinux

ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64


def bzimage(payload: bytes, setup_sects: int = 3, offset: int = 0x40) -> bytes:
    """A minimal bzImage: ``setup_sects`` sectors of real-mode setup after the boot
    sector, the header's magic and ``payload_offset``, then the payload at that offset
    into the protected-mode part."""
    head = bytearray(max(setup_sects + 1, 2) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<I", head, 0x248, offset)
    return bytes(head) + bytes(offset) + payload + b"\x00\x10\x00\x00"  # + its size word


@pytest.mark.parametrize("pack", [lambda b: lzma.compress(b, lzma.FORMAT_XZ),
                                  lambda b: gzip.compress(b, mtime=0)], ids=["xz", "gzip"])
def test_the_elf_is_unpacked_from_an_xz_or_gzip_payload(pack) -> None:  # type: ignore[no-untyped-def]
    assert vmlinux(bzimage(pack(ELF))) == ELF
    assert vmlinux(bzimage(pack(ELF), setup_sects=0, offset=0x123)) is None  # 0 means 4
    assert vmlinux(bzimage(pack(ELF), setup_sects=4, offset=0x123)) == ELF


def test_anything_else_leaves_the_bzimage_as_it_is() -> None:
    xz = lzma.compress(ELF, lzma.FORMAT_XZ)
    assert vmlinux(bzimage(b"\x28\xb5\x2f\xfd" + xz)) is None  # zstd: not inflated here
    assert vmlinux(bzimage(xz[: len(xz) // 2])) is None  # cut short
    assert vmlinux(bzimage(lzma.compress(b"MZ" + ELF[4:], lzma.FORMAT_XZ))) is None  # no ELF
    assert vmlinux(b"\x7fELF" + bytes(0x300)) is None  # no setup header
    assert vmlinux(b"") is None
