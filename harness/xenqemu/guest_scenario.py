"""The guest's scenario played by the harness's reference frontend: the known signal
``plays`` times (each play opening the stream anew, as each ``aplay`` does), then one
capture of as long (``arecord``). One piece of code for both places it runs:

* on the simulated Xen, for parity with Linux (:func:`harness.xenqemu.parity.reference_recording`);
* in the PV guest of the xen-qemu tier (``xen-qemu run --frontend reference``): the guest's
  /init runs ``python3 -m harness.xenqemu.guest_scenario``, which connects the reference
  frontend to the vsnd device ``xl create`` made, over the real-Xen seam (the guest's
  ``/dev/xen/xenbus``, ``gntalloc`` and ``evtchn``: grants and event channels between two
  domains, the backend in dom0), and prints the markers the ``aplay`` guest prints, so the
  host follows and judges both guests the same way.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.frontend import audio
from harness.frontend.driver import FrontendDevice
from harness.xenqemu.prepare import BUFFER_US, CHANNELS, FRAME_BYTES, PERIOD_US, RATE
from protocol_models.constants import PcmFormat

PLAYBACK, CAPTURE = "0/0", "0/1"
BUFFER_SZ = RATE * BUFFER_US // 1_000_000 * FRAME_BYTES
PERIOD_SZ = RATE * PERIOD_US // 1_000_000 * FRAME_BYTES
#: seconds the guest's frontend waits for the backend to connect (emulated time is slow)
CONNECT_TIMEOUT = 120.0


@dataclass
class Played:
    errors: list[str] = field(default_factory=list)  # per play: "" or what failed
    capture_error: str | None = None  # None: no capture
    recorded: bytes = b""


def play_scenario(dev: FrontendDevice, signal: bytes, *, plays: int, capture: bool,
                  on_play: Callable[[int, str], None] = lambda _n, _e: None) -> Played:
    """Play ``signal`` ``plays`` times on stream 0/0 (stopping at the first failure), then
    with ``capture`` record as many octets on 0/1."""
    out = Played()
    for n in range(1, plays + 1):
        rep = audio.play(dev.stream(PLAYBACK), signal, RATE, PcmFormat.S16_LE, CHANNELS,
                         BUFFER_SZ, PERIOD_SZ, pad_last_period=True)
        out.errors.append(rep.error or "")
        on_play(n, rep.error or "")
        if rep.error:
            return out
    if capture:
        rep = audio.capture(dev.stream(CAPTURE), RATE, PcmFormat.S16_LE, CHANNELS,
                            BUFFER_SZ, PERIOD_SZ, nbytes=len(signal))
        out.capture_error, out.recorded = rep.error or "", rep.data
    return out


def _cmdline(name: str, text: str, default: int) -> int:
    m = re.search(rf"(?:^|\s)sndif\.{name}=(\d+)", text)
    return int(m.group(1)) if m else default


def _say(*words: object) -> None:
    print("@@GUEST", *words, flush=True)


def main(argv: list[str] | None = None) -> int:
    """In the guest: the scenario the kernel command line gives (``sndif.frames``,
    ``sndif.plays``, ``sndif.capture``), the markers of the ``aplay`` guest on stdout (its
    console), the recording base64 between ``rec-begin`` and ``rec-end``."""
    ap = argparse.ArgumentParser(prog="python -m harness.xenqemu.guest_scenario")
    ap.add_argument("--signal", default="/signal.raw")
    ap.add_argument("--cmdline", default="/proc/cmdline")
    args = ap.parse_args(argv)
    from harness.xen.real.domain import RealDomain
    from harness.xen.real.pyxs_store import PyxsStore

    with open(args.cmdline) as f:
        cmdline = f.read()
    frames = _cmdline("frames", cmdline, 0)
    plays = _cmdline("plays", cmdline, 1)
    capture = _cmdline("capture", cmdline, 0) == 1
    with open(args.signal, "rb") as f:
        signal = f.read(frames * FRAME_BYTES)
    t0 = time.monotonic()
    store = PyxsStore(timeout=30.0)
    try:
        domid = int(store.read("domid"))  # relative: this domain's own node
    finally:
        store.close()
    dom = RealDomain(domid)
    try:
        dev = FrontendDevice(dom, 0, timeout_ms=30_000)
        dev.wait_connected(CONNECT_TIMEOUT)
        _say("card", f"domid={domid} connected in {time.monotonic() - t0:.1f} s")
        played = play_scenario(dev, signal, plays=plays, capture=capture,
                               on_play=lambda n, e: _say("aplay-run", n,
                                                         f"rc={1 if e else 0}", e))
        # the aplay guest's markers: the first failure's status, else 0
        _say(f"aplay rc={1 if any(played.errors) else 0}")
        if played.capture_error is not None:
            _say(f"arecord rc={1 if played.capture_error else 0}", played.capture_error)
            _say("rec-begin")
            print("begin-base64 644 rec.raw")
            data = base64.b64encode(played.recorded).decode()
            for i in range(0, len(data), 76):
                print(data[i:i + 76])
            print("====")
            _say("rec-end")
        dev.close(timeout=10.0)
    finally:
        dom.close()
    return 0


def guest_main(argv: list[str] | None = None) -> int:
    """:func:`main`, whose failure is said on the console (the traceback for the log, a
    ``fail`` marker and the play's status, so the host's stage follows at once)."""
    try:
        return main(argv)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        _say("fail", f"{type(exc).__name__}: {exc}")
        _say("aplay rc=1")
        return 1


if __name__ == "__main__":
    sys.exit(guest_main())
