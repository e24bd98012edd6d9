"""The options that describe a run's world (backend under test, card, audio host, ...),
shared by every command that builds one (demo, certify, shell): one set of names, one
parser into a :class:`~harness.world.spec.WorldSpec`."""

from __future__ import annotations

import argparse

from harness.world.spec import AUDIO_MODES, WorldSpec, WorldSpecError, world_spec


def add_world_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the backend under test and its world")
    g.add_argument("--backend", default="reference", metavar="SPEC",
                   help="reference (default), exec:'COMMAND ARGS' (started as domain 0 "
                        "with the sim's Xen libraries; {domid}, {frontend_domid}, {devid}, "
                        "{out} are replaced), or attach")
    g.add_argument("--defect", action="append", default=[], metavar="NAME",
                   help="inject this defect into the reference backend (repeatable)")
    g.add_argument("--vsnd", metavar="XL",
                   help="the card as an xl.cfg vsnd value, e.g. \"[['card, "
                        "sample-rates=48000', 'pcm, name=p', 'stream, type=p']]\"")
    g.add_argument("--config", metavar="FILE", help="the card from a TOML or xl.cfg file")
    g.add_argument("--audio", choices=AUDIO_MODES,
                   help="pulse: private PulseAudio (null sink + known-signal source); "
                        "alsa-file: ALSA file plugin; wav: the reference backend's files "
                        "(its default); none")
    g.add_argument("--backend-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the backend process (repeatable)")
    g.add_argument("--unique-id", metavar="TEMPLATE",
                   help="every stream's unique-id; {device} is the audio host's sink "
                        "(playback) or source (capture), e.g. 'pulse<{device}>'")


def world_from_args(args: argparse.Namespace) -> WorldSpec:
    """The :class:`WorldSpec` of parsed options; a bad value is a usage error."""
    from harness.cli import UsageError

    try:
        return world_spec(backend=args.backend, defects=args.defect, vsnd=args.vsnd,
                          config=args.config, audio=args.audio,
                          backend_env=args.backend_env, unique_id=args.unique_id)
    except WorldSpecError as exc:
        raise UsageError(str(exc)) from None
