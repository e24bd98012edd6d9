"""What a PV guest sends back on its console (a recording, a certification's report): a
base64 block between markers, read back byte-exact even with kernel messages printed in
between, and nothing (not an exception) when the guest died while sending it. No boot
needed."""

from __future__ import annotations

import base64

from harness.xenqemu.run import uuencoded_from_console


def _console(data: bytes, *, cut: int | None = None, noise: bool = False) -> str:
    text = base64.b64encode(data).decode()
    lines = [text[i:i + 76] for i in range(0, len(text), 76)][:cut]
    if noise:
        lines.insert(1, "[    4.113909] xen:xen_privcmd: No target domain found")
    body = ["@@GUEST out-begin", "begin-base64 644 report.tgz", *lines]
    if cut is None:
        body += ["====", "@@GUEST out-end"]
    return "\n".join(["@@GUEST init", *body, "@@GUEST done"]) + "\n"


def test_a_file_comes_back_byte_exact_between_kernel_messages() -> None:
    data = bytes(range(256)) * 7 + b"\x00"
    assert uuencoded_from_console(_console(data), "out") == data
    assert uuencoded_from_console(_console(data, noise=True), "out") == data
    assert uuencoded_from_console(_console(data), "rec") is None  # another file's markers


def test_a_file_cut_short_is_none() -> None:
    data = bytes(range(256)) * 7 + b"\x00"
    assert uuencoded_from_console(_console(data, cut=3), "out") is None
    # the last line lost (its padding with it): undecodable, so nothing
    broken = _console(b"abcd").replace("YWJjZA==", "YWJjZA")
    assert uuencoded_from_console(broken, "out") is None
