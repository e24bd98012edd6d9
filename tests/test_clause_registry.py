"""The clause registry (harness/report/clauses.toml): it loads, is consistent, agrees with
the clauses.md it summarises, and rejects bad data and unknown citations clearly."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness.report.registry import (
    DATA_FILE,
    LEVELS,
    RegistryError,
    load_registry,
    parse_registry,
)
from tests.requires import unavailable

CLAUSES_MD = Path(__file__).resolve().parents[2] / "shared" / "spec" / "clauses.md"
_SECTION4 = re.compile(r"^\* \*\*(SND-([A-H])-\d\d)\*\* \[([^\]]*)\](.*)$", re.M)


@pytest.fixture(scope="module")
def spec_text() -> str:
    if not CLAUSES_MD.is_file():
        unavailable(f"{CLAUSES_MD} is missing (the shared spec lives next to the repository)")
    return CLAUSES_MD.read_text(encoding="utf-8")


def _raw() -> dict[str, Any]:
    with DATA_FILE.open("rb") as fh:
        return tomllib.load(fh)


def test_registry_loads_with_every_area_and_lookup() -> None:
    reg = load_registry()
    assert sorted(reg.areas) == list("ABCDEFGH")
    ids = [c.id for c in reg]
    assert len(ids) == len(set(ids))
    assert sum(i.startswith("SND-") for i in ids) == 93
    assert [i for i in ids if i.startswith("AMBIG-")] == [f"AMBIG-{n}" for n in range(1, 23)]
    for area in reg.areas:
        in_area = reg.in_area(area)
        assert in_area and all(c.area == area for c in in_area)
    c09 = reg["SND-C-09"]
    assert (c09.level, c09.side, c09.judged_on_backend) == ("MUST", "BE", True)
    assert "SND-C-09" in reg and "SND-Z-01" not in reg


def test_unknown_ids_and_levels_are_clear_errors() -> None:
    reg = load_registry()
    with pytest.raises(RegistryError, match="unknown clause 'SND-C-99'"):
        reg["SND-C-99"]
    with pytest.raises(RegistryError, match="unknown area 'Z'"):
        reg.in_area("Z")
    assert reg.cite("SND-E-06:should").ref == "SND-E-06:SHOULD"
    assert reg.cite("SND-E-06").level == "MUST"
    with pytest.raises(RegistryError, match="SND-G-01 states no 'SHOULD' part"):
        reg.cite("SND-G-01:SHOULD")


def test_judged_on_backend_follows_the_side() -> None:
    for c in load_registry():
        if c.side in ("BE", "both"):
            assert c.judged_on_backend, c.id
        elif c.judged_on_backend and not c.is_ambiguity:
            assert c.note, f"{c.id}: a {c.side} clause judged on the backend needs a note"
        if not c.judged_on_backend:
            assert c.reason, c.id
        assert c.levels[0] == c.level and set(c.levels) <= set(LEVELS)


def test_matches_clauses_md(spec_text: str) -> None:
    """Every SND-X-nn of §4 is in the registry with its bracketed primary level and its
    area; every AMBIG-n of §8 too; nothing else."""
    reg = load_registry()
    found = _SECTION4.findall(spec_text)
    assert len(found) >= 93
    for cid, area, head, _body in found:
        primary = re.sub(r"-\d+$", "", re.split(r"[,/]", head)[0].strip())
        assert cid in reg, f"{cid} of clauses.md is missing from the registry"
        assert (reg[cid].level, reg[cid].area) == (primary, area), cid
    section8 = spec_text.split("## 8.", 1)[1]
    ambigs = {f"AMBIG-{n}" for n in re.findall(r"^(\d+)\. ", section8, re.M)}
    snd = {cid for cid, *_ in found}
    assert {c.id for c in reg} == snd | ambigs


def test_requirements_are_our_own_words(spec_text: str) -> None:
    """No requirement copies a run of 8 words from its clause in clauses.md (paths and
    identifiers, which can only be quoted, left out)."""
    lines = {m[0]: m[3] for m in _SECTION4.findall(spec_text)}

    def words(text: str) -> list[str]:
        text = re.sub(r"\S*/\S*|`[^`]*`", " ", text.lower())
        return [w for w in re.findall(r"[a-z0-9_]+", text) if "_" not in w]

    for c in load_registry():
        if c.id not in lines:
            continue
        src = " ".join(words(lines[c.id]))
        w = words(c.requirement)
        copied = [" ".join(w[i:i + 8]) for i in range(len(w) - 7)
                  if " ".join(w[i:i + 8]) in src]
        assert not copied, f"{c.id} copies clauses.md: {copied[0]!r}"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["clause"].append(dict(d["clause"][0])), "duplicate clause id SND-A-01"),
    (lambda d: d["clause"][0].update(level="SHALL"), "unknown level"),
    (lambda d: d["clause"][0].update(area="B"), "does not match the id"),
    (lambda d: d["clause"][0].update(side="guest"), "unknown side 'guest'"),
    (lambda d: d["clause"][0].update(reason=""), "no reason given"),
    (lambda d: d["clause"][0].update(id="SND-A-1"), "bad clause id 'SND-A-1'"),
    (lambda d: d["clause"][0].pop("requirement"), "missing or malformed field"),
    (lambda d: d["area"].pop("H"), "areas must be exactly A-H"),
    (lambda d: d["clause"][3].update(ambiguities=["AMBIG-99"]), "unknown clause AMBIG-99"),
])
def test_validation_rejects_bad_data(mutate: Any, message: str) -> None:
    data = _raw()
    parse_registry(data)  # the shipped data is valid
    mutate(data)
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(data)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[[clause]\n")
    with pytest.raises(RegistryError, match=re.escape(str(bad))):
        load_registry(bad)


def test_every_backend_must_and_should_clause_is_cited_by_a_suite_or_untestable() -> None:
    """Coverage: each MUST/SHOULD/REF clause a backend is judged on is cited by at least
    one suite case (a ``clause`` marker) or says why it cannot be (``untestable``)."""

    suites = Path(__file__).resolve().parents[1] / "suites"
    cited = set()
    for path in suites.glob("test_*.py"):
        for args in re.findall(r"clause\(([^)]*)\)", path.read_text()):
            cited |= {ref.split(":")[0] for ref in re.findall(r"SND-[A-H]-\d\d(?::\w+)?", args)}
    # the profile suite cites the clauses of its features through a table
    from harness.certify.profile import FEATURES

    cited |= {clause for _, clause in FEATURES.values()}
    reg = load_registry()
    missing = [c.id for c in reg if c.judged_on_backend and c.id.startswith("SND-")
               and c.level in ("MUST", "SHOULD", "REF") and c.id not in cited
               and not c.untestable]
    assert not missing, f"backend clauses no suite case cites, with no reason: {missing}"
    for c in reg:
        if c.untestable:
            assert c.id not in cited, f"{c.id} is cited by a suite but marked untestable"
