"""Tree primitives of the simulated xenstored: nodes, path rules, C-style parsing, perms.

Pure functions and one small dataclass; :mod:`harness.xen.sim.xenstored` does the locking,
transactions and watches. Semantics follow C xenstored 4.17 (shared/spec/xenstore.md §2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.xen.api import Perm
from protocol_models.xenstore import XsError

PERM_READ = 1
PERM_WRITE = 2
PERM_OWNER = 4
_LETTER_BITS = {"n": 0, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}

#: Only these special (``@``) names carry permissions and ever fire.
SPECIAL_PATHS = ("@introduceDomain", "@releaseDomain")

_VALID_CHARS = re.compile(r"[A-Za-z0-9\-/_@]*\Z")
_LOCAL_PREFIX = re.compile(r"/local/domain/(\d{1,5})/")  # sscanf("%5u/%n")
_ATOI = re.compile(rb"[ \t\n\v\f\r]*([+-]?\d+)")
_STRTOL0 = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")


@dataclass(slots=True)
class Node:
    """One node. Never mutated once stored: writers store a modified :meth:`copy`."""

    value: bytes
    perms: tuple[Perm, ...]
    children: list[str] = field(default_factory=list)  # insertion order, as C keeps it
    gen: int = 0

    def copy(self) -> Node:
        return Node(self.value, self.perms, list(self.children), self.gen)

    def children_bytes(self) -> bytes:
        return b"".join(c.encode() + b"\0" for c in self.children)

    def record_size(self) -> int:
        """Size of C's tdb record (header 24 + 8 per perm + data + child list): the
        node-size quota is checked against it."""
        return 24 + 8 * len(self.perms) + len(self.value) + len(self.children_bytes())


def domain_path(domid: int) -> str:
    return f"/local/domain/{domid}"


def parent_of(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


def is_child(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or below it (C's ``is_child``)."""
    if parent == "/":
        return child.startswith("/")
    return child == parent or child.startswith(parent + "/")


def canonicalize(raw: bytes, domid: int, path_max: int, allow_special: bool = False) -> str:
    """The absolute node name for ``raw`` as sent by ``domid``; EINVAL when it is invalid.

    Relative names resolve against ``/local/domain/<domid>``, also for dom0's socket."""
    try:
        path = raw.decode("ascii")
    except UnicodeDecodeError:
        raise XsError("EINVAL", "non-ASCII path") from None
    if path.startswith("@"):
        if allow_special and path in SPECIAL_PATHS:
            return path
        raise XsError("EINVAL", f"special path {path!r} not allowed here")
    if not path.startswith("/"):
        path = f"{domain_path(domid)}/{path}"
    check_node_name(path, path_max)
    return path


def check_node_name(path: str, path_max: int) -> None:
    if not path.startswith("/"):
        raise XsError("EINVAL", "path must be absolute")
    if path.endswith("/") and path != "/":
        raise XsError("EINVAL", "trailing slash")
    if "//" in path:
        raise XsError("EINVAL", "double slash")
    m = _LOCAL_PREFIX.match(path)
    if len(path) - (m.end() if m else 0) > path_max:
        raise XsError("EINVAL", "path too long")
    if not _VALID_CHARS.match(path):
        raise XsError("EINVAL", "invalid character in path")


def get_strings(payload: bytes) -> list[bytes]:
    """C's ``get_strings``: the nul-terminated strings; unterminated trailing bytes ignored."""
    parts = payload.split(b"\0")
    return parts[:-1]


def onearg(payload: bytes) -> bytes | None:
    """C's ``onearg``: exactly one nul-terminated string filling the payload, else None."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    return payload[:-1]


def atoi(raw: bytes) -> int:
    """C ``atoi`` (``abc`` -> 0), folded to an unsigned 32-bit domid as C stores it."""
    m = _ATOI.match(raw)
    return int(m.group(1)) & 0xFFFFFFFF if m else 0


def parse_perm(raw: bytes) -> Perm:
    """``<letter><strtol(…, 0)>``; anything else is EINVAL."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise XsError("EINVAL", "bad permission") from None
    if len(text) < 2 or text[0] not in _LETTER_BITS or not _STRTOL0.match(text[1:]):
        raise XsError("EINVAL", f"bad permission {text!r}")
    return Perm(text[0], int(text[1:], 0 if not _is_octal(text[1:]) else 8) & 0xFFFFFFFF)


def _is_octal(num: str) -> bool:
    digits = num.lstrip("+-")
    return len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX"


def format_perms(perms: tuple[Perm, ...]) -> bytes:
    return b"".join(f"{p.access}{p.domid}".encode() + b"\0" for p in perms)


def perm_for(domid: int, privileged: bool, target: int | None, perms: tuple[Perm, ...]) -> int:
    """C's ``perm_for_conn``: owner/privileged/target get everything; else the first later
    entry naming the caller (or its target) decides; else entry 0's flag."""
    owner = perms[0]
    if privileged or owner.domid == domid or (target is not None and owner.domid == target):
        return PERM_READ | PERM_WRITE | PERM_OWNER
    for p in perms[1:]:
        if p.domid == domid or (target is not None and p.domid == target):
            return _LETTER_BITS[p.access]
    return _LETTER_BITS[owner.access]
