"""``sndif-harness report allure REPORT_DIR [-o DIR]``: the Allure HTML report of a certify
run, built offline from ``REPORT_DIR/allure-results`` (written by every certify run; see
:mod:`harness.certify.allure_results`) with the npm package ``allure``, version 3 (Node.js,
no Java). Default output: ``REPORT_DIR/allure-report/`` (one self-contained
``index.html``: it opens from the file system, no server needed).

Where the Allure CLI comes from, first found wins: ``$SNDIF_ALLURE`` (the path of an
``allure`` 3 program); the project's install under ``$SNDIF_ALLURE_HOME`` (default
``~/.cache/sndif-harness/allure``, filled by ``.ci/setup`` or by
``npm install --prefix ~/.cache/sndif-harness/allure allure@3.18.0``); an ``allure`` on
PATH that says it is version 3 (Allure 2, the Java one, is not used). Building needs no
network; only that one-time install does.

Exit status: 0 built (the index.html path is printed); 2 usage error (no such directory,
no results in it, ``-o`` not a directory one may write the report into); 3 no Allure 3 CLI
(or no Node.js) on this machine, with one line saying how to get it, or the build failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

#: The npm package version .ci/setup installs and the how-to names.
ALLURE_NPM_VERSION = "3.18.0"
RESULTS_DIR = "allure-results"
REPORT_DIR = "allure-report"
#: Longest a report build may take; a certification run's results build in seconds.
_BUILD_TIMEOUT = 600.0


class AllureUnavailable(RuntimeError):
    """No Allure 3 CLI here; the message says how to get one."""


def cache_dir() -> Path:
    """Where the project's npm install of allure lives."""
    home = os.environ.get("SNDIF_ALLURE_HOME")
    if home:
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sndif-harness" / "allure"


def how_to_get() -> str:
    """One line: what to install for ``report allure`` on this machine."""
    install = f"npm install --prefix {cache_dir()} allure@{ALLURE_NPM_VERSION}"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return ("report allure needs Node.js and the npm package allure 3: install Node.js "
                f"and npm (Debian: apt-get install nodejs npm), then run '{install}' once "
                "(or bash .ci/setup)")
    return (f"report allure needs the npm package allure 3: run '{install}' once (or bash "
            ".ci/setup); building the report then needs no network")


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def find_allure() -> list[str]:
    """The command that runs an Allure 3 CLI; :class:`AllureUnavailable` when none."""
    explicit = os.environ.get("SNDIF_ALLURE")
    if explicit:
        if not (shutil.which(explicit) or Path(explicit).is_file()):
            raise AllureUnavailable(f"SNDIF_ALLURE={explicit}: no such program")
        return [explicit]
    local = cache_dir() / "node_modules" / ".bin" / "allure"
    if local.exists() and shutil.which("node") is not None:
        return [str(local)]
    on_path = shutil.which("allure")
    # Allure 2 (Java) is called allure too, and builds a different report from other options
    if on_path is not None and _version([on_path]).startswith("3."):
        return [on_path]
    raise AllureUnavailable(how_to_get())


def results_dir_of(report_dir: Path) -> Path:
    """A certify report directory's allure-results, or an allure-results directory given
    directly."""
    inside = report_dir / RESULTS_DIR
    return inside if inside.is_dir() else report_dir


def build(results: Path, output: Path, *, name: str = "sndif certification") -> Path:
    """Build the single-file Allure report of ``results`` into ``output``; the path of its
    index.html. :class:`AllureUnavailable` without a CLI, RuntimeError when it fails."""
    argv = find_allure()
    config = {"name": name, "output": str(output),
              # one index.html with the data inlined: opens from file:// (the multi-file
              # report fetches its data, which browsers refuse from the file system)
              "plugins": {"awesome": {"options": {"singleFile": True, "reportName": name,
                                                  "groupBy": ["epic", "feature", "story"]}}}}
    with tempfile.TemporaryDirectory(prefix="sndif-allure-") as tmp:
        # its own working directory: an allurerc.* lying in ours must not change the report
        rc = Path(tmp) / "allurerc.json"
        rc.write_text(json.dumps(config), encoding="utf-8")
        try:
            out = subprocess.run(
                [*argv, "generate", "--config", str(rc), "--output", str(output),
                 str(results)], cwd=tmp, capture_output=True, text=True,
                stdin=subprocess.DEVNULL, timeout=_BUILD_TIMEOUT, check=False,
                env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"allure generate took over {_BUILD_TIMEOUT:g} s") from None
        except OSError as exc:
            raise AllureUnavailable(f"{argv[0]}: {exc.strerror}; {how_to_get()}") from None
    index = output / "index.html"
    if out.returncode != 0 or not index.is_file():
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise RuntimeError(f"allure generate failed (status {out.returncode})"
                           + (f": {said[-1]}" if said else ""))
    return index


def report_allure(args: argparse.Namespace) -> int:
    """The ``report allure`` handler (dispatched by :mod:`harness.cli.report_cmd`)."""
    import sys

    from harness.cli import UsageError

    if len(args.results) != 1:
        raise UsageError(f"report allure: give one report directory, not {len(args.results)}")
    report_dir = Path(args.results[0])
    if not report_dir.is_dir():
        raise UsageError(f"report allure {report_dir}: no such directory (give a certify "
                         "--report-dir, or its allure-results)")
    results = results_dir_of(report_dir)
    if not any(results.glob("*-result.json")):
        raise UsageError(f"report allure {report_dir}: no Allure results in {results} (a "
                         "certify run writes them to REPORT_DIR/allure-results)")
    output = Path(args.output) if args.output else report_dir / REPORT_DIR
    if args.output == "-":
        raise UsageError("-o -: the Allure report is a directory, not a stream")
    if output.exists() and (not output.is_dir() or (
            any(output.iterdir()) and not (output / "index.html").is_file())):
        # allure replaces the directory's content: only an earlier report may be replaced
        raise UsageError(f"-o {output}: exists and is neither empty nor an Allure report")
    if not output.parent.is_dir():
        raise UsageError(f"-o {output}: no such directory {output.parent}")
    try:
        index = build(results.resolve(), output.resolve())
    except AllureUnavailable as exc:
        print(f"sndif-harness: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:
        print(f"sndif-harness: {exc}", file=sys.stderr)
        return 3
    print(index)
    return 0


__all__ = ["ALLURE_NPM_VERSION", "AllureUnavailable", "build", "cache_dir", "find_allure",
           "how_to_get", "report_allure", "results_dir_of"]
