"""Coverage feedback (issue 12): snd_be built with GCC's -fsanitize-coverage=trace-pc
and our runtime (harness/peers/sndif_cov.c) shares an edge bitmap the fuzzer reads after
every example; ``--compare-feedback`` runs one budget without and one with the edges
steering Hypothesis (``target()``) and prints the edges each reached."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest
from requires import need_snd_be_build

from harness.cli import main
from harness.fuzz.coverage import MAP_PREFIX, build_instrumented

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def instrumented() -> Path:
    need_snd_be_build()
    return build_instrumented()


def test_edges_with_and_without_feedback(instrumented: Path, tmp_path: Path,
                                         capsys) -> None:
    before = set(glob.glob(MAP_PREFIX + "*"))
    code = main(["fuzz", "--backend", "exec:" + shlex.join([str(instrumented), "-v",
                                                             "*:Info"]),
                 "--audio", "pulse", "--unique-id", "pulse<{device}>", "--compare-feedback",
                 "--budget", "15s", "--shrink-seconds", "2", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    print(text)
    assert code == 0, text
    m = re.search(r"edges reached in 15 s: (\d+) without feedback, (\d+) with feedback",
                  text)
    assert m, text
    without, with_ = int(m[1]), int(m[2])
    assert without > 100 and with_ > 100  # the bitmap was read, from every life
    # the maps of our backend processes are gone from /dev/shm
    assert not set(glob.glob(MAP_PREFIX + "*")) - before


def test_an_uninstrumented_backend_has_no_edges(tmp_path: Path, capsys) -> None:
    code = main(["fuzz", "--compare-feedback", "--budget", "3s", "--rules", "core",
                 "--out", str(tmp_path)])
    assert code == 1
    assert "not instrumented" in capsys.readouterr().out
