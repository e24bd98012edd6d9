"""The backend profile: the loader refuses what it cannot use with one clear line, and the
profile suite fails a declaration the backend does not keep (and passes one it keeps)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.certify.profile import FEATURES, ProfileError, load_profile

ROOT = Path(__file__).resolve().parents[1]
ALL_TRUE = "[backend]\nname = 'reference'\n[features]\n" + "".join(
    f"{f} = true\n" for f in FEATURES)


def test_a_valid_profile_loads(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text(ALL_TRUE + "[ambiguities]\n'AMBIG-1' = 'ids continue'\n")
    prof = load_profile(p)
    assert prof.name == "reference" and prof.declares("volume") is True
    assert prof.ambiguities == {"AMBIG-1": "ids continue"}
    assert load_profile(_write(tmp_path, "[features]\n")).declares("mute") is None


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,message", [
    ("[features]\nreverb = true\n", "unknown feature 'reverb'"),
    ("[features]\nvolume = 'yes'\n", "feature volume must be true or false"),
    ("[features\n", "not TOML"),
    ("[extras]\n", "unknown table(s) ['extras']"),
    ("[ambiguities]\nfoo = 'x'\n", "takes \"AMBIG-n\""),
])
def test_bad_profiles_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProfileError, match="--profile") as info:
        load_profile(_write(tmp_path, text))
    assert message in str(info.value)


def _suite(profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "suites" / "test_profile.py"), "--profile",
                           str(profile), *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_profile_suite_fails_a_declaration_the_backend_does_not_keep(tmp_path: Path
                                                                         ) -> None:
    ok = _suite(_write(tmp_path, ALL_TRUE))
    assert ok.returncode == 0, ok.stdout[-2000:]
    wrong = _suite(_write(tmp_path, ALL_TRUE.replace("mute = true", "mute = false")))
    assert wrong.returncode == 1
    assert "test_declared_feature_matches_behaviour[mute]" in wrong.stdout
    assert "declares mute = false, but the backend does" in wrong.stdout
    usage = _suite(_write(tmp_path, "[features]\nreverb = true\n"))
    assert usage.returncode == 4 and "unknown feature 'reverb'" in usage.stderr
