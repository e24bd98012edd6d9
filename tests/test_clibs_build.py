"""The replacement Xen client libraries: built from source on first use, cached by content,
built atomically, and exporting exactly Debian's dynamic symbol table (names, types,
versions, data sizes), so binaries linked against Debian's libraries load with them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from requires import XEN_C_HINT, unavailable

from harness.xen.sim.clibs import build


def need_debian() -> None:
    """Skip (fail under CI=true) unless gcc, binutils and Debian's libxen-dev are there."""
    missing = [t for t in ("gcc", "nm") if shutil.which(t) is None]
    missing += [s for s in build.SONAMES if build.debian_library(s) is None]
    if missing:
        unavailable(f"missing {', '.join(missing)}: {XEN_C_HINT}")


@pytest.fixture(scope="module")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_debian()
    return build.build_libs(cache_dir=tmp_path_factory.mktemp("clibs"),
                            extra_cflags=["-Werror"])


def dynamic_symbols(lib: Path) -> set[tuple[str, str, int]]:
    """(type, name@@version, size for data objects) of every defined dynamic symbol."""
    out = subprocess.run(["nm", "-D", "-S", "--defined-only", "--with-symbol-versions",
                          str(lib)], capture_output=True, text=True, check=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            _, size, kind, name = parts
        elif len(parts) == 3:
            _, kind, name = parts
            size = "0"
        else:
            continue
        syms.add((kind, name, int(size, 16) if kind not in "Tt" else 0))
    return syms


@pytest.mark.parametrize("soname", build.SONAMES)
def test_symbol_table_equals_debians(libdir: Path, soname: str) -> None:
    ours = dynamic_symbols(libdir / soname)
    debian = dynamic_symbols(build.debian_library(soname))  # type: ignore[arg-type]
    assert ours - debian == set(), "exported but not by Debian's library"
    assert debian - ours == set(), "missing (a binary linked to Debian's would not load)"


@pytest.mark.parametrize("soname", build.SONAMES)
def test_soname_and_no_undefined_xen_symbols(libdir: Path, soname: str) -> None:
    dyn = subprocess.run(["readelf", "-d", str(libdir / soname)], capture_output=True,
                         text=True, check=True).stdout
    assert f"Library soname: [{soname}]" in dyn
    undef = subprocess.run(["nm", "-D", "--undefined-only", str(libdir / soname)],
                           capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in undef.splitlines() if line.strip()]
    # only libc and our own sibling libraries (libxenctrl forwards the compat API)
    foreign = [n for n in names if n.startswith(("xc_", "xs_", "xencall", "xenforeign",
                                                 "xendevicemodel", "xentoolcore"))]
    assert foreign == []


def test_build_is_warning_free(libdir: Path) -> None:
    assert build.build_warnings(libdir) == ""


def test_committed_symbol_lists_are_current() -> None:
    """symbols/*.txt (used without libxen-dev) match what the Debian host yields; if this
    fails, run `python -m harness.xen.sim.clibs.build --write-symbol-lists`."""
    need_debian()
    kinds = build.header_return_kinds()
    assert kinds, "gcc -aux-info of Debian's headers gave no prototypes"
    for soname in build.SONAMES:
        derived = build.debian_symbol_table(soname, kinds)
        committed = build.committed_symbol_table(soname)
        assert derived is not None and committed is not None
        assert committed.render() == derived.render(), soname


def test_return_kinds_follow_the_prototypes() -> None:
    need_debian()
    tables = {s: build.debian_symbol_table(s) for s in build.SONAMES}
    kinds = {sym.name: sym.kind for t in tables.values() if t for sym in t.symbols}
    assert kinds["xc_interface_open"] == "ptr"
    assert kinds["xc_map_foreign_range"] == "ptr"
    assert kinds["xc_cpumap_alloc"] == "ptr"  # a pointer typedef (xc_cpumap_t)
    assert kinds["xc_domain_pause"] == "int"
    assert kinds["xengnttab_map_grant_refs"] == "ptr"
    assert kinds["xc__hypercall_buffer_HYPERCALL_BUFFER_NULL"] == "data"
    assert kinds["xc_report"] == "void"


def test_cache_is_reused_and_keyed_by_content(tmp_path: Path) -> None:
    need_debian()
    first = build.build_libs(cache_dir=tmp_path)
    stamp = (first / "libxenevtchn.so.1").stat().st_mtime_ns
    again = build.build_libs(cache_dir=tmp_path)
    assert again == first
    assert (again / "libxenevtchn.so.1").stat().st_mtime_ns == stamp  # not rebuilt
    other = build.build_libs(cache_dir=tmp_path, extra_cflags=["-DSNDIF_TEST_VARIANT=1"])
    assert other != first and other.parent == first.parent
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_default_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.cache_root() == tmp_path / "sndif-harness" / "clibs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build.cache_root() == tmp_path / ".cache" / "sndif-harness" / "clibs"


def test_concurrent_builders_agree(tmp_path: Path) -> None:
    """Several processes building into an empty cache at once all get the same complete
    directory, and no temporary build directory is left."""
    need_debian()
    code = textwrap.dedent(f"""
        from harness.xen.sim.clibs import build
        print(build.build_libs(cache_dir={str(tmp_path)!r}, force=False))
        """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    dirs = {out.strip() for out, _ in results}
    assert len(dirs) == 1
    d = Path(dirs.pop())
    assert build._complete(d)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_builds_from_committed_lists_without_debian(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """Without Debian's libraries and headers the committed lists give the same exports."""
    need_debian()
    real = {s: build.debian_library(s) for s in build.SONAMES}
    monkeypatch.setattr(build, "debian_library", lambda soname: None)
    monkeypatch.setattr(build, "header_return_kinds", lambda: {})
    build._tables.cache_clear()
    try:
        d = build.build_libs(cache_dir=tmp_path)
    finally:
        build._tables.cache_clear()
    for soname, lib in real.items():
        assert dynamic_symbols(d / soname) == dynamic_symbols(lib)  # type: ignore[arg-type]


def test_builds_without_xen_headers(tmp_path: Path) -> None:
    """The hand-written sources carry their own copies of the few Xen declarations they
    need (checked against the real headers when present), so hosts without libxen-dev
    build them too: force that path and compare the exports."""
    need_debian()
    d = build.build_libs(cache_dir=tmp_path,
                         extra_cflags=["-DSNDIF_NO_XEN_HEADERS", "-Werror"])
    assert build.build_warnings(d) == ""
    for soname in build.SONAMES:
        lib = build.debian_library(soname)
        assert dynamic_symbols(d / soname) == dynamic_symbols(lib)  # type: ignore[arg-type]


def test_stub_generation_kinds() -> None:
    table = build.SymbolTable("libx.so.1", ["V1"], [
        build.Symbol("V1", "f_int", "int"), build.Symbol("V1", "f_ptr", "ptr"),
        build.Symbol("V1", "f_void", "void"), build.Symbol("V1", "done", "int"),
        build.Symbol("V1", "obj", "data", 24)])
    src = build.stub_source(table, {"done"})
    assert "long f_int(void) { errno = ENOSYS; return -1; }" in src
    assert "void *f_ptr(void) { errno = ENOSYS; return (void *)0; }" in src
    assert "void f_void(void) { errno = ENOSYS; }" in src
    assert "done" not in src
    assert "obj[24]" in src
    script = build.version_script(table)
    assert "local:\n    *;" in script and "f_int;" in script
