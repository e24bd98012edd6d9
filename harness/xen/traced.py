"""A Store that records every XenStore operation into a trace, around any other Store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness.trace import Trace
from harness.xen.api import Perm, Store, WatchEvent

T = TypeVar("T")


class TracedStore:
    """Implements :class:`harness.xen.api.Store` by delegating to ``inner``; each call is
    recorded with its outcome (the value read, or the error name)."""

    def __init__(self, inner: Store, trace: Trace) -> None:
        self.inner = inner
        self.trace = trace
        self.domid = inner.domid

    def _call(self, op: str, fn: Callable[..., T], *args: object, **fields: Any) -> T:
        try:
            result = fn(*args)
        except Exception as exc:
            self.trace.record("xs", self.domid, op=op, **fields,
                              error=getattr(exc, "name", type(exc).__name__))
            raise
        self.trace.record("xs", self.domid, op=op, **fields, **_shown(result))
        return result

    def read(self, path: str, tx: int = 0) -> bytes:
        return self._call("read", self.inner.read, path, tx, path=path, tx=tx)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        shown = value.decode(errors="replace") if isinstance(value, bytes) else value
        self._call("write", self.inner.write, path, value, tx, path=path, value=shown, tx=tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._call("mkdir", self.inner.mkdir, path, tx, path=path, tx=tx)

    def rm(self, path: str, tx: int = 0) -> None:
        self._call("rm", self.inner.rm, path, tx, path=path, tx=tx)

    def directory(self, path: str, tx: int = 0) -> list[str]:
        return self._call("directory", self.inner.directory, path, tx, path=path, tx=tx)

    def get_perms(self, path: str, tx: int = 0) -> list[Perm]:
        return self._call("get_perms", self.inner.get_perms, path, tx, path=path, tx=tx)

    def set_perms(self, path: str, perms: Sequence[Perm], tx: int = 0) -> None:
        self._call("set_perms", self.inner.set_perms, path, perms, tx, path=path,
                   perms=" ".join(map(str, perms)), tx=tx)

    def watch(self, path: str, token: str) -> None:
        self._call("watch", self.inner.watch, path, token, path=path, token=token)

    def unwatch(self, path: str, token: str) -> None:
        self._call("unwatch", self.inner.unwatch, path, token, path=path, token=token)

    def next_event(self, timeout: float) -> WatchEvent | None:
        ev = self.inner.next_event(timeout)
        if ev is not None:
            self.trace.record("watch", self.domid, path=ev.path, token=ev.token)
        return ev

    def transaction_start(self) -> int:
        return self._call("transaction_start", self.inner.transaction_start)

    def transaction_end(self, tx: int, commit: bool = True) -> bool:
        return self._call("transaction_end", self.inner.transaction_end, tx, commit, tx=tx,
                          commit=commit)

    def get_domain_path(self, domid: int) -> str:
        return self._call("get_domain_path", self.inner.get_domain_path, domid, of=domid)

    def close(self) -> None:
        self.inner.close()


def _shown(result: object) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, bytes):
        return {"result": result.decode(errors="replace")}
    if isinstance(result, list):
        return {"result": [str(r) for r in result]}
    return {"result": result}
