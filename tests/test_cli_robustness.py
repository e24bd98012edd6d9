"""Bad command lines, generated (Hypothesis over argv) for every sub-command of the real
parser: each one is a one-line error on stderr naming what was wrong, exit status 2, no
traceback, nothing on stdout. Most examples call the CLI's ``main`` in-process (fast);
a sample goes through the installed program in a subprocess (real argv bytes)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness.cli import build_parser, main


def _leaves(parser: argparse.ArgumentParser,
            path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                       argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name))


PARSER = build_parser()
LEAVES = dict(_leaves(PARSER))
COMMANDS = sorted(LEAVES)


def _options(path: tuple[str, ...], valued: bool) -> list[argparse.Action]:
    """The leaf's options: those taking one value (``valued``) or all but --help."""
    return [a for a in LEAVES[path]._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)
            and (not valued or (a.nargs is None and a.const is None
                                and not isinstance(a, argparse._StoreConstAction)))]


def _rejected(argv: list[str]) -> bool:
    """argparse refuses ``argv`` (checked before main runs it: a generated command line
    that happens to be valid would run a demo or a certification)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            return exc.code == 2
    return False


def _value_rejected(action: argparse.Action, value: str) -> bool:
    if action.choices is not None and value not in action.choices:
        return True
    if callable(action.type):
        try:
            action.type(value)
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            return True
    return False


WEIRD = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["inf", "-inf", "nan", "1e999", "-1", "0", "-0", "0x", "1e20",
                     "9" * 5000, "", " ", "\udcff\udcfe", "a" * 100_000, "\t", "--"]),
    st.binary(min_size=1, max_size=12).map(os.fsdecode),  # argv bytes that are no UTF-8
)
COMMAND = st.sampled_from(COMMANDS)


@st.composite
def bad_argv(draw: st.DrawFn) -> list[str]:
    path = draw(COMMAND)
    argv = list(path)
    kind = draw(st.sampled_from(["unknown option", "bad value", "missing value",
                                 "unknown command"]))
    if kind == "unknown option":
        argv.append("--zz-" + draw(st.text("abcdefgh-", min_size=1, max_size=8)))
    elif kind == "unknown command":
        argv = [*path[:-1], "zz-" + draw(st.text("abcxyz", min_size=1, max_size=6))]
    else:
        options = _options(path, valued=True)
        assume(options)
        action = draw(st.sampled_from(options))
        flag = draw(st.sampled_from(action.option_strings))
        if kind == "missing value":
            argv.append(flag)
        else:
            value = draw(WEIRD)
            assume(_value_rejected(action, value))
            argv += [flag, value]
    return argv


def _call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _assert_one_line_error(argv: list[str], status: int, out: str, err: str) -> None:
    lines = err.strip().splitlines()
    assert status == 2, (argv, status, err)
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith("sndif-harness") and "Traceback" not in err, (argv, err)
    assert out == "", (argv, out)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(argv=bad_argv())
def test_bad_argv_is_a_one_line_error(argv: list[str]) -> None:
    assume(_rejected(argv))
    _assert_one_line_error(argv, *_call(argv))


#: values the parser accepts but the command refuses before it starts anything
BAD_DIRS = st.one_of(
    st.text("abc/", max_size=20).map(lambda t: "/proc/" + t),
    st.text("abc/", max_size=20).map(lambda t: "/sys/" + t),
    st.integers(83, 4000).map(lambda n: "/tmp/" + "d" * n),
    st.just("/etc/hostname/sub"), st.just("/etc/hostname"),
)


@settings(max_examples=40, deadline=None)
@given(dir=BAD_DIRS, command=st.sampled_from([["sim", "run"],
                                              ["sim", "exec", "--domid", "0"]]))
def test_a_directory_that_cannot_hold_the_sockets(dir: str, command: list[str]) -> None:
    argv = [*command, "--dir", dir] + (["--", "true"] if command[1] == "exec" else [])
    _assert_one_line_error(argv, *_call(argv))


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return True
    return False


@settings(max_examples=40, deadline=None)
@given(name=st.one_of(st.binary(min_size=1, max_size=8).filter(_not_utf8).map(os.fsdecode),
                      st.sampled_from(["a\tb", "new\nline", "\x7f"]),
                      st.integers(257, 100_000).map(lambda n: "n" * n),
                      st.just("")))
def test_a_domain_name_that_is_not_one(name: str) -> None:
    argv = ["sim", "exec", "--domid", "3", "--name", name, "--", "true"]
    _assert_one_line_error(argv, *_call(argv))


@settings(max_examples=40, deadline=None)
@given(word=st.text("qxzj_-", min_size=1, max_size=12))
def test_unknown_names_for_the_listing_commands(word: str) -> None:
    for argv in (["ls", "zz" + word], ["defects", "zz" + word], ["defects", "--area", word],
                 ["dissect", "--as", "req", "zz" + word]):
        _assert_one_line_error(argv, *_call(argv))


def test_every_command_is_covered() -> None:
    """The commands come from the real parser: a new one is fuzzed without a change here."""
    assert ("sim", "exec") in LEAVES and ("bench", "sim") in LEAVES and len(LEAVES) >= 20


def _subprocess_sample(seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    sample = []
    for path in rng.sample(COMMANDS, 4):
        sample.append([p.encode() for p in path] + [b"--zz-no-such-option"])
    sample.append([b"sim", b"exec", b"--name", b"\xff\xfe", b"--", b"true"])
    sample.append([b"sim", b"run", b"--dir", b"/proc/\xff"])
    return sample


SEED = random.randrange(1 << 32)


@pytest.mark.parametrize("index", range(6))
def test_the_installed_program_says_it_in_one_line(index: int) -> None:
    print(f"sample seed {SEED}")
    argv = _subprocess_sample(SEED)[index]
    proc = subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True,
                          timeout=60)
    err = proc.stderr.decode(errors="replace")
    _assert_one_line_error([a.decode(errors="replace") for a in argv], proc.returncode,
                           proc.stdout.decode(errors="replace"), err)
