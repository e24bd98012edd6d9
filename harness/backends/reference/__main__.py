"""``python -m harness.backends.reference``: the reference sndif backend as a process.

It acts as the domain named by its environment (``Sim.env(domid)`` for the simulated Xen);
``--domid`` must agree. SIGTERM/SIGINT: tear down (unmap, unbind), exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from harness.fejudge import FrontendJudge
from harness.trace import Trace
from harness.xen.connect import connect_domain

from .audio_io import FileAudio, parse_capture_spec
from .defects import Defects, UnknownDefect
from .driver import ReferenceBackend
from .pulse_io import PulseAudioIO


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.backends.reference",
                                description="Reference backend of the Xen PV sound "
                                            "protocol (sndif).")
    p.add_argument("--domid", type=int, default=0, help="the backend domain (default 0)")
    p.add_argument("--frontend-domid", type=int, help="serve only this frontend domain")
    p.add_argument("--devid", type=int, help="serve only this device id")
    p.add_argument("--out", help="directory for the playback WAV files (default: none "
                                 "written)")
    p.add_argument("--capture-source", default="sine:1000",
                   help="capture data: sine:FREQ, silence, or a WAV file (default "
                        "sine:1000)")
    p.add_argument("--audio", choices=["wav", "pulse"], default="wav",
                   help="wav: playback to WAV files under --out, capture from "
                        "--capture-source; pulse: play to and record from the PulseAudio "
                        "server of the environment (PULSE_SERVER) (default wav)")
    p.add_argument("--pulse-sink", help="with --audio pulse: the sink (default: the "
                                        "server's default)")
    p.add_argument("--pulse-source", help="with --audio pulse: the source (default: the "
                                          "server's default)")
    p.add_argument("--trace", help="append a JSONL trace to this file")
    p.add_argument("--no-close-on-exit", action="store_true",
                   help="on exit leave the BE state as it is instead of writing Closed")
    p.add_argument("--defect", action="append", default=[], metavar="NAME",
                   help="inject this bug (repeatable; 'sndif-harness defects' lists them)")
    p.add_argument("--judge-frontend", metavar="FILE",
                   default=os.environ.get("SNDIF_JUDGE_FRONTEND") or None,
                   help="judge the frontend's side of the protocol while serving it (it "
                        "changes no answer) and write the verdicts to FILE, a results.json "
                        "(default $SNDIF_JUDGE_FRONTEND)")
    p.add_argument("--judge-frontend-name", metavar="NAME",
                   default=os.environ.get("SNDIF_JUDGE_FRONTEND_NAME") or "frontend",
                   help="what the judged frontend is, for the report (default "
                        "$SNDIF_JUDGE_FRONTEND_NAME)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        defects = Defects.of(args.defect)
    except UnknownDefect as exc:
        print(f"python -m harness.backends.reference: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s vsnd-be[%(process)d] %(levelname)s %(message)s")
    log = logging.getLogger("harness.backends.reference")
    try:
        parse_capture_spec(args.capture_source)  # fail early on a bad source
        domain = connect_domain(args.domid)
    except (OSError, ValueError, KeyError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    trace = Trace(args.trace) if args.trace else None
    judge = None
    if args.judge_frontend:
        judge = FrontendJudge(args.judge_frontend, name=args.judge_frontend_name,
                              platform="sim" if "XEN_SIM_DIR" in os.environ else "real")
    audio: FileAudio | PulseAudioIO = (
        PulseAudioIO(args.pulse_sink, args.pulse_source) if args.audio == "pulse"
        else FileAudio(args.out, args.capture_source))
    backend = ReferenceBackend(domain, audio,
                               frontend_domid=args.frontend_domid, devid=args.devid,
                               trace=trace, close_on_exit=not args.no_close_on_exit,
                               defects=defects, judge=judge)

    def stop(signum: int, frame: Any) -> None:
        backend.request_stop(0)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = backend.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        backend.close()
        if isinstance(audio, PulseAudioIO):
            audio.close()  # let the last stream play out, stop every pacat
        domain.close()
        if trace is not None:
            trace.close()
    log.info("exit %d", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
