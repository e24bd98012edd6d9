"""The world options (backend under test, card, audio host, ...) on a CLI command: the
same definitions as the pytest options (:mod:`harness.world.options`)."""

from __future__ import annotations

import argparse

from harness.world.options import add_world_options as _add
from harness.world.options import world_from_options
from harness.world.spec import WorldSpec, WorldSpecError


def add_world_options(p: argparse.ArgumentParser) -> None:
    _add(p.add_argument_group("the backend under test and its world").add_argument)


def world_from_args(args: argparse.Namespace, **more: object) -> WorldSpec:
    """The :class:`WorldSpec` of parsed options; a bad value is a usage error."""
    from harness.cli import UsageError

    try:
        return world_from_options(lambda name: getattr(args, name), **more)
    except WorldSpecError as exc:
        raise UsageError(str(exc)) from None
