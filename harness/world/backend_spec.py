"""Which backend a run is against, chosen once per run (``--backend``).

    reference                    the reference backend, started by the supervisor
                                 (``--defect NAME`` adds injected defects)
    exec:'COMMAND ARGS'          any program, started by the supervisor as the backend
                                 domain of the sim (replacement Xen libraries, XenStore
                                 socket, domain identity), like ``sim exec``
    attach                       a backend that is already running (e.g. on a real Xen
                                 host): never started or stopped, only watched

In an ``exec:`` command line the placeholders ``{domid}``, ``{frontend_domid}``,
``{devid}`` and ``{out}`` (the run's output directory) are replaced.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Literal

from harness.backends.reference.launch import reference_argv

Kind = Literal["reference", "exec", "attach"]
KINDS: tuple[Kind, ...] = ("reference", "exec", "attach")
PLACEHOLDERS = ("domid", "frontend_domid", "devid", "out")
# {name} as a whole word; shell code's ${VAR} and { list; } are left alone
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_]\w*)\}")


class BackendSpecError(ValueError):
    """A ``--backend`` / ``--defect`` value that cannot be used; the message names the bad
    part."""


@dataclass(frozen=True)
class BackendSpec:
    kind: Kind
    argv: tuple[str, ...] = ()  # exec only
    defects: tuple[str, ...] = ()  # reference only

    @property
    def starts_process(self) -> bool:
        return self.kind != "attach"

    def __str__(self) -> str:
        if self.kind == "exec":
            return "exec:" + shlex.join(self.argv)
        if self.kind == "reference" and self.defects:
            return "reference (defects: " + ", ".join(self.defects) + ")"
        return self.kind

    def command(self, *, domid: int, frontend_domid: int, devid: int, out: str,
                python: str, capture_source: str | None = None,
                audio: str | None = None) -> list[str]:
        """The argv to start (``exec``/``reference``); ``attach`` has none."""
        if self.kind == "attach":
            raise ValueError("an attached backend is not started by the harness")
        values = {"domid": domid, "frontend_domid": frontend_domid, "devid": devid,
                  "out": out}
        if self.kind == "exec":
            argv = list(self.argv)
            for key, value in values.items():
                argv = [a.replace("{" + key + "}", str(value)) for a in argv]
            return argv
        return reference_argv(domid=domid, frontend_domid=frontend_domid, devid=devid,
                              out_dir=f"{out}/wav", defects=self.defects, python=python,
                              capture_source=capture_source, audio=audio)


def parse_backend_spec(text: str, defects: tuple[str, ...] | list[str] = ()
                       ) -> BackendSpec:
    """Parse a ``--backend`` value (and the ``--defect`` names that go with it)."""
    raw = text.strip()
    kind, sep, rest = raw.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise BackendSpecError(
            f"--backend {text!r}: unknown kind {kind!r}; expected reference, "
            "exec:'COMMAND ARGS' or attach")
    defects = tuple(defects)
    if kind != "reference" and defects:
        raise BackendSpecError(
            f"--defect {', '.join(defects)}: defects apply only to --backend reference, "
            f"not {kind!r}")
    for d in defects:
        if not d or not all(c.isalnum() or c == "-" for c in d):
            raise BackendSpecError(f"--defect {d!r}: not a defect name (letters, digits, "
                                   "'-')")
    if kind == "exec":
        if not sep or not rest.strip():
            raise BackendSpecError(f"--backend {text!r}: exec needs a command, e.g. "
                                   "exec:'./my-backend -v'")
        try:
            argv = tuple(shlex.split(rest))
        except ValueError as exc:
            raise BackendSpecError(f"--backend {text!r}: the command after 'exec:' does "
                                   f"not parse: {exc}") from exc
        for a in argv:
            for name in _PLACEHOLDER.findall(a):
                if name not in PLACEHOLDERS:
                    raise BackendSpecError(
                        f"--backend {text!r}: unknown placeholder {{{name}}} (known: "
                        + ", ".join("{" + p + "}" for p in PLACEHOLDERS) + ")")
        return BackendSpec("exec", argv)
    if sep:
        raise BackendSpecError(f"--backend {text!r}: {kind!r} takes no argument after ':'")
    return BackendSpec(kind, (), defects)
