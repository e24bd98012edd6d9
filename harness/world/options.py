"""The options that describe a run's world, defined once for every front end: the CLI
commands (demo, certify, ...) add them to argparse, ``conftest.py`` to pytest (whose
``addoption`` takes the same keywords), and :func:`world_from_options` reads them back
into a :class:`~harness.world.spec.WorldSpec`, whichever parser holds them."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from harness.world.spec import AUDIO_MODES, WorldSpec, world_spec


def _seconds(text: str) -> float:
    """A timeout in seconds: 1 .. 3600 (argparse and pytest name the bad value)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 1 <= value <= 3600):
        raise argparse.ArgumentTypeError(f"{text} s is out of range (1 .. 3600 s)")
    return value


#: (flag, add_argument/addoption keywords); ``dest`` is the flag's name with ``_``.
WORLD_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--backend", {"default": "reference", "metavar": "SPEC",
                   "help": "reference (default), exec:'COMMAND ARGS' (started as the backend "
                           "domain with the sim's Xen libraries; {domid}, {frontend_domid}, "
                           "{devid}, {out} are replaced), or attach (already running)"}),
    ("--defect", {"action": "append", "default": [], "metavar": "NAME",
                  "help": "inject this defect into the reference backend (repeatable)"}),
    ("--vsnd", {"default": None, "metavar": "XL",
                "help": "the card as an xl.cfg vsnd value, e.g. \"[['card, "
                        "sample-rates=48000', 'pcm, name=p', 'stream, type=p']]\" (default: "
                        "one playback and one capture stream, 48 kHz S16_LE)"}),
    ("--config", {"dest": "vsnd_config", "default": None, "metavar": "FILE",
                  "help": "the card from a file: TOML (.toml) or xl.cfg syntax"}),
    ("--audio", {"default": None, "choices": AUDIO_MODES,
                 "help": "pulse: a private PulseAudio (null sink + known-signal source); "
                         "alsa-file: ALSA's file plugin; wav: the reference backend's files "
                         "(its default); none"}),
    ("--backend-env", {"action": "append", "default": [], "metavar": "NAME=VALUE",
                       "help": "environment of the backend process (repeatable)"}),
    ("--unique-id", {"default": None, "metavar": "TEMPLATE",
                     "help": "every stream's unique-id; {device} is the audio host's sink "
                             "(playback) or source (capture), e.g. 'pulse<{device}>'"}),
    ("--start-timeout", {"default": None, "metavar": "S", "type": _seconds,
                         "help": "how long the backend has to reach InitWait, and the "
                                 "device then to connect (default 10 s each, libxl's; more "
                                 "where everything is slow, as under emulation)"}),
)


def dest(flag: str, kw: dict[str, Any]) -> str:
    return str(kw.get("dest", flag[2:].replace("-", "_")))


def add_world_options(add: Callable[..., Any]) -> None:
    """Add every world option with ``add`` (``ArgumentParser.add_argument`` or pytest's
    ``OptionGroup.addoption``)."""
    for flag, kw in WORLD_OPTIONS:
        add(flag, **kw)


def world_from_options(get: Callable[[str], Any], **more: Any) -> WorldSpec:
    """The :class:`WorldSpec` of the options ``get(dest)`` returns (raises
    :class:`~harness.world.spec.WorldSpecError` naming a bad value)."""
    start = get("start_timeout")
    if start is not None:
        more = {"init_timeout": start, "connect_timeout": start, **more}
    return world_spec(backend=get("backend"), defects=get("defect") or [],
                      vsnd=get("vsnd"), config=get("vsnd_config"), audio=get("audio"),
                      backend_env=get("backend_env") or [], unique_id=get("unique_id"),
                      **more)


def option_args(get: Callable[[str], Any]) -> list[str]:
    """The command-line form of the world options set (to pass them on to pytest)."""
    out: list[str] = []
    for flag, kw in WORLD_OPTIONS:
        value = get(dest(flag, kw))
        if isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        elif value is not None:
            out += [flag, str(value)]
    return out
