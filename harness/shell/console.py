"""``sndif-harness shell``: a world built, then Python with the models and the connected
card in scope; interactive (IPython when installed, the standard library's console
otherwise), or one piece of code (``-c``) or a script.

Leaving by any way (EOF, ``exit()``, an exception, SIGTERM, SIGHUP, Ctrl-C outside the
interactive prompt) unwinds through :func:`~harness.world.world.running_world`, which
stops the backend, the sound server and the simulated Xen: nothing is left running.
"""

from __future__ import annotations

import code
import contextlib
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, FrameType, TracebackType
from typing import Any

from scapy.packet import Packet
from scapy.packet import ls as scapy_ls
from scapy.utils import hexdump

from harness.shell.helpers import Faults, Listing, LiveTrace, Shell, XenStoreShell
from harness.trace import Trace
from harness.world.spec import WorldSpec
from harness.world.world import World, running_world
from protocol_models import constants, sndif

PS1, PS2 = "sndif>>> ", "........ "
_EXIT_HINT = "exit() or Ctrl-D (EOF)"


class _Exit:
    """``exit``/``quit`` of the shell: unlike ``site``'s, does not close stdin (the
    teardown still prints)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {_EXIT_HINT} to leave (everything is torn down)"

    def __call__(self, status: int | None = None) -> None:
        raise SystemExit(status)


def _ls(obj: Any = None, *args: Any, **kwargs: Any) -> Listing | None:
    """``ls()``: the sndif model classes; ``ls(OpenReq)``/``ls(pkt)``: Scapy's field list."""
    if obj is None:
        return Listing(f"{c.__name__:<16} {(c.__doc__ or '').strip().splitlines()[0]}"
                       .replace("``", "") for c in sndif.MESSAGE_CLASSES)
    scapy_ls(obj, *args, **kwargs)
    return None


def namespace(world: World, trace: Trace) -> dict[str, Any]:
    """What the shell has in scope."""
    sh = Shell(world, trace)
    ns: dict[str, Any] = {c.__name__: c for c in sndif.MESSAGE_CLASSES}
    for name in ("Op", "PcmFormat", "Trigger", "Evt", "XenErrno", "XsField",
                 "status_name", "status_value"):
        ns[name] = getattr(constants, name)
    ns.update(
        __name__="__main__", __builtins__=__builtins__,
        ls=_ls, hexdump=hexdump, Packet=Packet,
        world=world, card=world.dev, streams=list(world.dev.streams) if world.dev else [],
        sr=sh.sr, events=sh.events, play=sh.play, share_buffer=sh.share_buffer,
        xs=XenStoreShell(world.tool_store, world.dev.fe_path if world.dev else "",
                         world.be_path),
        trace=LiveTrace(trace), fault=Faults(world),
        exit=_Exit("exit"), quit=_Exit("quit"),
    )
    return ns


def banner(world: World) -> str:
    s = world.spec
    platform = "the simulated Xen" if s.platform == "sim" else "this Xen host"
    dev = world.dev
    lines = [f"sndif-harness shell: frontend (domain {s.frontend_domid}) connected to "
             f"backend {s.backend} (domain {s.backend_domid}) on {platform}, audio "
             f"{s.audio_mode}"]
    if dev is not None:
        for st in dev.streams:
            kind = "playback" if st.type == "p" else "capture"
            uid = f", unique-id {st.config.unique_id}" if st.config.unique_id else ""
            lines.append(f"  streams[{st.index}]: {st.path} {kind}{uid}")
    lines += [
        f"trace: {world.out / 'trace.jsonl'}   backend log: {world.log_path}",
        "in scope: card, streams, sr(stream, pkt), events(stream), play(stream, "
        "seconds|wav), share_buffer(stream, size), xs, trace, fault(op, ...), world;",
        "  the models (ls() lists them, ls(OpenReq) their fields), hexdump(pkt), Op, "
        "PcmFormat, Trigger",
        "e.g. sr(0, HwParamReq(formats=['S16_LE'], rates_min=8000, rates_max=48000, "
        "channels_min=1, channels_max=2))",
        f"leave with {_EXIT_HINT}: the backend and the simulated Xen are stopped.",
    ]
    return "\n".join(lines)


# --- running user code ------------------------------------------------------------------

_SHELL_DIR = str(Path(__file__).resolve().parent)


def _user_traceback(exc: BaseException, runner_dirs: tuple[str, ...] = ()) -> str:
    """The traceback of the user's code: the frames of this module (that ran it) are
    dropped, as Python's own REPL drops its own, and so are the helpers' frames where the
    error is the helper refusing its arguments (``sr(0, b"short")``): the user's line is
    where the mistake is. Frames deeper down (the frontend's) stay: they explain."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename == __file__ or
                              tb.tb_frame.f_code.co_filename.startswith(runner_dirs or
                                                                        ("\0",))):
        tb = tb.tb_next
    te = traceback.TracebackException(type(exc), exc, tb)
    frames = list(te.stack)
    while len(frames) > 1 and frames[-1].filename.startswith(_SHELL_DIR):
        frames.pop()
    te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format())


def run_code(source: str, filename: str, ns: dict[str, Any]) -> int:
    """Run a whole program (``-c`` or a script) in ``ns``: exit status 0, or 1 after an
    uncaught exception (its traceback on stderr), or the status of ``SystemExit``."""
    try:
        compiled: CodeType = compile(source, filename, "exec")
    except SyntaxError as exc:
        sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        return 1
    try:
        exec(compiled, ns)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    except Exception as exc:
        sys.stderr.write(_user_traceback(exc))
        return 1
    return 0


class _Console(code.InteractiveConsole):
    def runcode(self, codeobj: CodeType) -> None:
        try:
            exec(codeobj, self.locals)
        except SystemExit:
            raise
        except BaseException as exc:  # KeyboardInterrupt too: the prompt comes back
            sys.stderr.write(_user_traceback(exc))


def _interact_plain(ns: dict[str, Any], text: str) -> None:
    with contextlib.suppress(ImportError):
        import readline
        import rlcompleter

        readline.set_completer(rlcompleter.Completer(ns).complete)
        readline.parse_and_bind("tab: complete")
    sys.ps1, sys.ps2 = PS1, PS2
    _Console(ns, filename="<sndif-shell>").interact(banner=text, exitmsg="tearing down ...")


def _interact_ipython(ns: dict[str, Any], text: str) -> bool:
    try:
        from IPython.terminal.embed import InteractiveShellEmbed
    except ImportError:
        return False
    import IPython

    # IPython's own exit/quit end its loop; ours would be caught as a user SystemExit
    ns = {k: v for k, v in ns.items() if k not in ("exit", "quit")}
    shell = InteractiveShellEmbed(banner1=text + "\n", user_ns=ns, confirm_exit=False,
                                  exit_msg="tearing down ...")
    ipython_dir = (str(Path(IPython.__file__).resolve().parent),)

    def show(sh: Any, etype: type[BaseException], value: BaseException, tb: Any,
             tb_offset: int | None = None) -> None:
        sys.stderr.write(_user_traceback(value, ipython_dir))  # as the plain console

    shell.set_custom_exc((Exception,), show)
    shell()
    return True


def interact(ns: dict[str, Any], text: str, *, plain: bool = False) -> int:
    if plain or not sys.stdin.isatty() or not _interact_ipython(ns, text):
        _interact_plain(ns, text)
    return 0


# --- signals and the whole session --------------------------------------------------------

@contextlib.contextmanager
def terminating_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal went away) leave the shell like ``exit()``: a
    SystemExit that unwinds the world. The first one is enough; more are ignored so
    that the teardown (bounded by its own timeouts) is not cut short."""
    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def run_shell(spec: WorldSpec, out: Path, *, source: str | None = None,
              filename: str = "<string>", plain: bool = False, quiet: bool = False,
              argv: list[str] | None = None) -> int:
    """Build the world of ``spec`` (files under ``out``), then run ``source`` in it (with
    ``sys.argv`` = ``argv``), or an interactive shell when ``source`` is None; the exit
    status."""
    out.mkdir(parents=True, exist_ok=True)
    trace = Trace(out / "trace.jsonl")
    saved_argv = sys.argv
    with terminating_signals():
        try:
            sys.argv = list(argv) if argv is not None else [filename]
            with running_world(spec, out, trace=trace) as world:
                ns = namespace(world, trace)
                if source is not None:
                    ns["__file__"] = filename
                    return run_code(source, filename, ns)
                return interact(ns, banner(world), plain=plain)
        finally:
            sys.argv = saved_argv
            trace.close()
            if not quiet and source is None:
                print(f"stopped; trace: {out / 'trace.jsonl'}", file=sys.stderr)
