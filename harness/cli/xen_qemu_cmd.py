"""``sndif-harness xen-qemu prepare|run``: the real-Xen tier. Xen 4.17 and a Debian dom0
and guest under QEMU (TCG), the backend under test in dom0, the real Linux
``xen-snd-front`` in the guest playing a known signal, compared byte for byte with what
the backend wrote out.

Exit status of ``run``: 0 pass, 1 a stage failed or the audio differs, 2 usage error,
3 something is missing on the host (the message says what to install)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.cli import UsageError, number_in
from harness.xenqemu import FRONTENDS

EXIT_PASS, EXIT_FAIL = 0, 1  # (2: a usage error, 3: the host lacks a tool: harness.cli, .xenqemu)
BACKENDS = ("snd_be", "reference")


def _say(text: str) -> None:
    print(text, flush=True)


def _prepare(args: argparse.Namespace) -> int:
    from harness.xenqemu import XenQemuError, said
    from harness.xenqemu.prepare import prepare

    t0 = time.monotonic()
    try:
        p = prepare(args.cache, say=_say)
    except XenQemuError as exc:
        return said("sndif-harness", exc, EXIT_FAIL)
    how = "built" if p.built else "reused"
    _say(f"prepared ({how}, {time.monotonic() - t0:.1f} s): {p.dir} (kernel {p.kver})")
    return EXIT_PASS


def _run(args: argparse.Namespace) -> int:
    from harness.xenqemu import XenQemuError, said
    from harness.xenqemu.prepare import prepare
    from harness.xenqemu.run import run

    if args.parity and args.backend != "reference":
        raise UsageError("--parity needs --backend reference (it records what the guest's "
                         "frontend sent)")
    out = Path(args.out) if args.out else Path("reports") / time.strftime(
        "xen-qemu-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")
    try:
        p = prepare(args.cache, say=_say)
        result = run(p, out, backend=args.backend, seconds=args.seconds,
                     capture=args.capture, plays=args.plays, frontend=args.frontend,
                     say=_say)
    except XenQemuError as exc:
        return said("sndif-harness", exc, EXIT_FAIL)
    if result.failed_stage is not None:
        _say(f"FAIL at stage {result.failed_stage}: {result.failure}")
    player, recorder = (("aplay", "arecord") if args.frontend == "linux" else
                        ("the reference frontend's playback",
                         "the reference frontend's capture"))
    _say(f"{player} in the guest: rc={result.aplay_rc}")
    if result.audio_equal:
        _say(f"audio: the backend received the {result.played} bytes played, bit-exact")
    else:
        _say(f"audio: MISMATCH: {result.mismatch}")
    if result.capture:
        _say(f"{recorder} in the guest: rc={result.arecord_rc}")
        _say("capture: the guest recorded the backend's source bit-exact"
             if result.capture_equal else f"capture: MISMATCH: {result.capture_mismatch}")
    if result.backend_errors:
        _say(f"note: the backend logged {len(result.backend_errors)} error line(s), the "
             f"first: {result.backend_errors[0].strip()}")
    ok = result.ok
    if args.backend == "reference" and result.failed_stage is None:
        ok = _sequence(args, result.out) and ok
    _say(f"{'PASS' if ok else 'FAIL'}; logs in {result.out}")
    return EXIT_PASS if ok else EXIT_FAIL


def _sequence(args: argparse.Namespace, out: Path) -> bool:
    """The guest frontend's requests as the reference backend recorded them, written as
    ``<frontend>-sequence.json``; with ``--parity`` compared with the reference frontend's
    in the same scenario on the simulated Xen: Linux's with the allowances of
    :mod:`harness.xenqemu.parity`, the reference frontend's own exactly (on real Xen it
    must send what it sends on the simulated one). False: a difference."""
    from harness.xenqemu import parity

    linux = args.frontend == "linux"
    source = (parity.SOURCE if linux else "the reference frontend in a PV guest on Xen "
              "4.17 under QEMU, recorded by the reference backend in dom0")
    live = parity.linux_recording(out, f"{source}; xen-qemu run --seconds "
                                       f"{args.seconds:g} --plays {args.plays}"
                                       f"{' --capture' if args.capture else ''}")
    live.write(out / f"{args.frontend}-sequence.json")
    who = "Linux frontend" if linux else "reference frontend (real Xen)"
    for stream, steps in sorted(live.streams.items()):
        _say(f"{who}'s requests on stream {stream}: "
             + ", ".join(str(s).split(" ", 1)[0] if s.op == parity.HWQ else str(s)
                         for s in steps))
    if not args.parity:
        return True
    ref = parity.reference_recording(out / "parity", plays=args.plays, seconds=args.seconds,
                                     capture=args.capture)
    if not linux:
        same = live.streams == ref.streams
        _say("parity of the reference frontend, real Xen with the simulated: "
             + ("the same requests" if same else
                f"DIFFERENT: real {live.streams}, simulated {ref.streams}"))
        return same
    found = parity.compare(live, ref)
    for f in found:
        _say(f"parity: {f}")
    differences = [f for f in found if f.allowed is None]
    _say(f"parity with the reference frontend: {len(differences)} difference(s), "
         f"{len(found) - len(differences)} allowed")
    return not differences


def _batch(args: argparse.Namespace) -> int:
    from harness.xenqemu.batch import run_batch

    out = Path(args.out) if args.out else Path("reports") / time.strftime(
        "xen-qemu-batch-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")
    return run_batch(args.commands, out, _say)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "xen-qemu", help="real Xen under QEMU: the backend in dom0, Linux's frontend in a "
                         "guest",
        description="Real Xen 4.17 with a Debian dom0 and PV guest under QEMU (software "
                    "emulation, no KVM): Debian's packages are fetched with apt-get "
                    "download into a cache, nothing is installed on the host.")
    sub = p.add_subparsers(dest="xen_qemu_command", metavar="ACTION")
    sub.required = True
    cache_help = ("cache root (default: $SNDIF_HARNESS_CACHE, else "
                  "~/.cache/sndif-harness); images go to <root>/xen-qemu/<versions>/")

    pr = sub.add_parser("prepare", help="fetch the packages and build the images (cached)")
    pr.add_argument("--cache", type=Path, default=None, help=cache_help)
    pr.set_defaults(handler=_prepare)

    r = sub.add_parser(
        "run", help="boot, play from the guest, check the backend got it bit-exact",
        description="Boot Xen + dom0 under QEMU, start the backend in dom0, create a PV "
                    "guest with a vsnd card, play a known signal with aplay through "
                    "xen-snd-front, and compare what the backend wrote out byte for byte. "
                    "Exit 0 pass, 1 stage failure or audio mismatch, 2 usage error, "
                    "3 host environment missing.")
    r.add_argument("--backend", choices=BACKENDS, default="snd_be",
                   help="the backend in dom0: xen-troops snd_be (built from the peers' "
                        "tarballs) or the harness's reference backend (default snd_be)")
    r.add_argument("--seconds", type=number_in(0.25, 16, unit=" s"), default=3.0,
                   help="seconds of audio the guest plays, rounded to whole periods "
                        "(0.25 .. 16, default 3)")
    r.add_argument("--plays", type=number_in(1, 4, integer=True), default=1,
                   help="play the signal this many times, each aplay opening and closing "
                        "the stream anew (the reopen scenario; 1 .. 4, default 1)")
    r.add_argument("--frontend", choices=FRONTENDS, default="linux",
                   help="the guest's frontend: Linux's xen-snd-front driven by aplay and "
                        "arecord, or the harness's reference frontend (Python in the "
                        "guest, on the real-Xen seam: gntalloc, evtchn, xenbus), playing "
                        "the same scenario (default linux)")
    r.add_argument("--capture", action="store_true",
                   help="after playing, record as long with arecord in the guest and check "
                        "it got the backend's capture source bit-exact")
    r.add_argument("--parity", action="store_true",
                   help="with --backend reference: also play the same scenario with the "
                        "harness's reference frontend on the simulated Xen and compare its "
                        "requests with those Linux sent (exit 1 on a difference)")
    r.add_argument("--out", default=None,
                   help="directory for the serial log, backend log and audio "
                        "(default: reports/xen-qemu-<time>)")
    r.add_argument("--cache", type=Path, default=None, help=cache_help)
    r.set_defaults(handler=_run)

    b = sub.add_parser(
        "batch", help="several certify/fuzz/shell commands in dom0 of one boot",
        description="Run harness commands (certify, fuzz, shell: each one quoted command "
                    "line, as given to sndif-harness, --platform xen-qemu implied) in dom0 "
                    "of one boot of real Xen under QEMU, one after another, each exactly "
                    "as it runs alone: its options, its out directory (each its own), its "
                    "output (printed in turn) and its exit status. Every command is "
                    "checked before the boot. Exit: the highest of the commands' "
                    "statuses; 2 when one cannot run in a batch (nothing booted).")
    b.add_argument("commands", nargs="+", metavar="COMMAND",
                   help="a harness command line, e.g. 'fuzz --budget 60s --out f'")
    b.add_argument("--out", default=None,
                   help="directory for the boot's serial log and dom0's script (default: "
                        "reports/xen-qemu-batch-<time>)")
    b.set_defaults(handler=_batch)
