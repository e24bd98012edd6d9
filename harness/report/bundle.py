"""The certification bundle: one ``.tar.gz`` a person hands on, and its verification.

:func:`create_bundle` packs every regular file of a report directory (results.json,
junit.xml, report.html/.md, the backend's log, verdicts and traces, ...), the profile the
run declared when it lies outside the directory (as ``profile/<name>``), a generated
``README.txt`` (what was certified, and the command line to reproduce it) and
``MANIFEST.sha256`` (``sha256sum`` format: every other file's hash), all under one top
directory named after the bundle::

    cert/MANIFEST.sha256
    cert/README.txt
    cert/results.json
    cert/backend/backend.log ...

The archive is deterministic for the same files (sorted members, owner 0, mode 0644) and
written atomically.

:func:`verify_bundle` reads the archive without extracting it and lists what is wrong:
unsafe members (absolute paths, ``..``, links, devices, duplicates), a missing manifest,
a hash that does not match, a file listed but missing, a file present but not listed; and
completeness: a results.json that is readable, marked complete, where every MUST clause of
the registry judged on a backend has a verdict (or is listed untestable) and no case was
skipped without a reason.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from harness.report.registry import Registry, load_registry
from harness.report.results import SCHEMA

MANIFEST = "MANIFEST.sha256"
README = "README.txt"
RESULTS = "results.json"
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")
#: Files of a bundle's own making: never taken from the report directory.
_GENERATED = frozenset({MANIFEST, README})


class BundleError(ValueError):
    """A bundle cannot be made or read at all (the message is one line)."""


# -- creating --------------------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _report_files(report_dir: Path) -> Iterator[tuple[str, Path]]:
    """(name in the bundle, file) of every regular file under ``report_dir``, sorted;
    symbolic links, sockets and FIFOs are left out (a bundle holds only plain files)."""
    for dirpath, dirnames, filenames in os.walk(report_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(report_dir).as_posix()
            if rel in _GENERATED or name.endswith(".part"):  # a write in progress
                continue
            yield rel, path


def readme_text(doc: Mapping[str, Any], name: str) -> str:
    """README.txt: what the bundle certifies and how to reproduce and verify it."""
    run, be, summary = doc.get("run") or {}, doc.get("backend") or {}, doc.get("summary") or {}
    binary = be.get("binary") or {}
    argv = [str(a) for a in run.get("command_line") or []]
    lines = [
        "sndif-harness certification bundle",
        "",
        f"overall:      {summary.get('overall')} ({summary.get('reason')})",
        f"backend:      {be.get('spec')}"
        + (f" with injected defects {', '.join(map(str, be['defects']))}"
           if be.get("defects") else ""),
    ]
    if binary:
        lines += [f"binary:       {binary.get('path')}",
                  f"sha256:       {binary.get('sha256')}"]
    lines += [
        f"harness:      sndif-harness {run.get('harness_version')}, python "
        f"{run.get('python')}, pytest {run.get('pytest')}",
        f"platform:     {run.get('platform')}",
        f"run:          {run.get('started')} .. {run.get('finished')} ({run.get('state')}, "
        f"{run.get('cases_done')} of {run.get('cases_collected')} cases)",
        f"profile:      {run.get('profile') or 'none'}",
        "",
        "Reproduce (from a checkout of the same harness version, after .ci/setup):",
        "",
        "    " + (shlex.join(argv) if argv else "(no command line recorded)"),
        "",
        "with --report-dir pointing at a new, empty directory. The pytest command it ran:",
        "",
        "    pytest " + shlex.join([str(a) for a in run.get("pytest_args") or []]),
        "",
        "Verify this bundle:",
        "",
        f"    sndif-harness bundle verify {name}.tar.gz",
        f"    # or by hand: tar xzf {name}.tar.gz && cd {name} && sha256sum -c {MANIFEST}",
        "",
        "Contents: results.json (every clause's verdict and every case's evidence; schema "
        "in harness/report/results.py), report.html and report.md (the report), junit.xml, "
        "backend/ (the backend's log with per-case marks, verdicts.jsonl, each case's "
        "frontend trace under cases/), and MANIFEST.sha256 (the SHA-256 of every other "
        "file).",
    ]
    return "\n".join(lines) + "\n"


def _bundle_name(output: Path) -> str:
    name = output.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "bundle"
    return name or "bundle"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def create_bundle(report_dir: str | Path, output: str | Path) -> list[str]:
    """Write the bundle of ``report_dir`` to ``output``; return its members' names (the
    top directory left out). :class:`BundleError` if there is nothing to certify."""
    report_dir, output = Path(report_dir), Path(output)
    results_path = report_dir / RESULTS
    try:
        doc = json.loads(results_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{report_dir}: no {RESULTS} (not a certify report directory)"
                          ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{results_path}: unreadable ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BundleError(f"{results_path}: not a results.json of schema {SCHEMA}")
    top = _bundle_name(output)
    out_abs = output.resolve()
    files: dict[str, bytes] = {}
    mtimes: dict[str, float] = {}
    for rel, path in _report_files(report_dir):
        if path.resolve() == out_abs:  # the bundle written into the directory it packs
            continue
        files[rel] = path.read_bytes()
        mtimes[rel] = path.stat().st_mtime
    profile = (doc.get("run") or {}).get("profile")
    if isinstance(profile, str) and profile:
        p = Path(profile)
        p = p if p.is_absolute() else Path.cwd() / p
        with contextlib.suppress(OSError):
            inside = p.resolve().is_relative_to(report_dir.resolve())
            if p.is_file() and not inside:
                files[f"profile/{p.name}"] = p.read_bytes()
                mtimes[f"profile/{p.name}"] = p.stat().st_mtime
    stamp = mtimes.get(RESULTS, 0.0)
    files[README] = readme_text(doc, top).encode()
    mtimes[README] = stamp
    manifest = "".join(f"{_sha256(files[n])}  {n}\n" for n in sorted(files))
    files[MANIFEST] = manifest.encode()
    mtimes[MANIFEST] = stamp
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=output.name + ".", suffix=".part", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            # mtime=0 in the gzip header: the same files give the same bytes
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(files):
                    _add(tar, f"{top}/{name}", files[name], mtimes[name])
            raw.flush()
            os.fsync(raw.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sorted(files)


# -- verifying -------------------------------------------------------------------------------

def _unsafe(name: str) -> str:
    """Why a member name is unsafe to extract, or ""."""
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return "an absolute or non-POSIX path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' component"
    return ""


def _read_members(path: Path, problems: list[str]) -> tuple[str, dict[str, bytes]]:
    """(top directory, {name below it: content}) of the archive; unsafe or unexpected
    members are problems, and are not read."""
    try:
        tar = tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: not a gzip-compressed tar archive ({exc})") from None
    files: dict[str, bytes] = {}
    tops: set[str] = set()
    with tar:
        try:
            for m in tar:
                why = _unsafe(m.name)
                if why:
                    problems.append(f"unsafe member {m.name!r}: {why}")
                    continue
                parts = PurePosixPath(m.name).parts
                if m.isdir():
                    continue
                if not m.isfile():
                    problems.append(f"unsafe member {m.name!r}: not a regular file "
                                    "(link or device)")
                    continue
                if len(parts) < 2:
                    problems.append(f"member {m.name!r} is not inside the bundle's "
                                    "directory")
                    continue
                tops.add(parts[0])
                rel = "/".join(parts[1:])
                if rel in files:
                    problems.append(f"member {m.name!r} appears twice")
                    continue
                fh = tar.extractfile(m)
                files[rel] = fh.read() if fh is not None else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"the archive is damaged: {exc}")
    if len(tops) > 1:
        problems.append(f"more than one top directory: {', '.join(sorted(tops))}")
    return (min(tops) if tops else ""), files


def _check_manifest(files: Mapping[str, bytes], problems: list[str]) -> None:
    raw = files.get(MANIFEST)
    if raw is None:
        problems.append(f"no {MANIFEST}")
        return
    listed: dict[str, str] = {}
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        m = _MANIFEST_LINE.match(line)
        if not m:
            problems.append(f"{MANIFEST} line {n}: not '<sha256>  <file>'")
            continue
        if m[2] in listed:
            problems.append(f"{MANIFEST} line {n}: {m[2]} listed twice")
        listed[m[2]] = m[1]
    for name, digest in listed.items():
        if name not in files:
            problems.append(f"missing file: {name} (listed in {MANIFEST})")
        elif _sha256(files[name]) != digest:
            problems.append(f"hash mismatch: {name} (the file was changed)")
    for name in sorted(files):
        if name != MANIFEST and name not in listed:
            problems.append(f"extra file: {name} (not in {MANIFEST})")


def completeness_problems(doc: Any, registry: Registry) -> list[str]:
    """What keeps a results.json document from being a complete certification."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return [f"{RESULTS}: not a results.json of schema {SCHEMA}"]
    run: dict[str, Any] = doc["run"] if isinstance(doc.get("run"), dict) else {}
    problems = []
    state = run.get("state")
    if run.get("complete", state == "finished") is not True:
        problems.append(f"{RESULTS}: the run is marked incomplete (state {state}, "
                        f"{run.get('cases_done')} of {run.get('cases_collected')} cases)")
    verdicts = {str(c.get("id")): str(c.get("verdict"))
                for c in doc.get("clauses") or [] if isinstance(c, dict)}
    if run.get("judged") == "frontend":
        # a frontend's certification judges its own set of clauses (harness/fejudge): its
        # document says which, and which of them no backend can observe
        missing = [str(c.get("id")) for c in doc.get("clauses") or []
                   if isinstance(c, dict) and "MUST" in (c.get("levels") or [])
                   and c.get("judged_on_backend") and not c.get("untestable")
                   and str(c.get("verdict")) == "UNTESTED"]
    else:
        missing = [c.id for c in registry
                   if "MUST" in c.levels and c.judged_on_backend and not c.untestable
                   and verdicts.get(c.id, "UNTESTED") == "UNTESTED"]
    if missing:
        problems.append(f"{len(missing)} MUST clause(s) without a verdict and not listed "
                        f"untestable: {', '.join(missing[:12])}"
                        + (" ..." if len(missing) > 12 else ""))
    for case in doc.get("cases") or []:
        if not isinstance(case, dict):
            continue
        verdict, message = str(case.get("verdict")), str(case.get("message") or "").strip()
        skipped = verdict == "N/A" or message.startswith("skipped:")
        if skipped and not message.removeprefix("skipped:").strip():
            problems.append(f"case {case.get('nodeid')} was skipped ({verdict}) without a "
                            "reason")
    return problems


def verify_bundle(path: str | Path, registry: Registry | None = None) -> list[str]:
    """Everything wrong with the bundle at ``path`` (empty: it verifies).
    :class:`BundleError` when it is not an archive at all."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    problems: list[str] = []
    _top, files = _read_members(path, problems)
    _check_manifest(files, problems)
    raw = files.get(RESULTS)
    if raw is None:
        problems.append(f"no {RESULTS} in the bundle")
    else:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{RESULTS}: not JSON ({exc})")
        else:
            problems += completeness_problems(doc, registry or load_registry())
    return problems


__all__ = ["MANIFEST", "README", "BundleError", "completeness_problems", "create_bundle",
           "readme_text", "verify_bundle"]
