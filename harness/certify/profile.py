"""The backend's profile: what it declares it implements among the optional parts of the
protocol, and its choice on AMBIG points. A TOML file (``--profile``):

    [backend]
    name = "snd_be"

    [features]              # each true or false; a feature left out is probed
    capture = true          # capture streams work (OPEN + READ + START of a "c" stream)
    volume = false          # SET_VOLUME / GET_VOLUME answer 0 (SND-H-04: MAY)
    mute = false            # MUTE / UNMUTE answer 0 (SND-H-04: MAY)
    pause_resume = true     # PAUSE then RESUME while running answer 0 (SND-D-05)
    position_events = true  # CUR_POS while running (SND-E-01)
    hw_param_query = true   # HW_PARAM_QUERY of the card's space answers 0 (SND-F-03)

    [ambiguities]           # free text: the backend's documented choice, reported as is
    "AMBIG-1" = "event ids continue across OPEN"

``suites/test_profile.py`` probes every feature and checks the declaration against what
the backend does: a mismatch is a FAIL; without a profile it reports what it found. The
suites ask :meth:`Profile.declares` to call a case N/A for a feature declared absent.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

#: feature -> (what it means, the clause a backend that declares it must then keep)
FEATURES: dict[str, tuple[str, str]] = {
    "capture": ("capture streams deliver data (OPEN, START, READ)", "SND-C-11"),
    "volume": ("SET_VOLUME/GET_VOLUME answer 0", "SND-H-03"),
    "mute": ("MUTE/UNMUTE answer 0", "SND-H-03"),
    "pause_resume": ("PAUSE then RESUME while running answer 0", "SND-D-03"),
    "position_events": ("CUR_POS events while running", "SND-E-01"),
    "hw_param_query": ("HW_PARAM_QUERY of the card's space answers 0", "SND-F-03"),
}


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the bad part."""


@dataclass(frozen=True)
class Profile:
    path: str | None = None
    name: str | None = None
    features: dict[str, bool] = field(default_factory=dict)
    ambiguities: dict[str, str] = field(default_factory=dict)

    def declares(self, feature: str) -> bool | None:
        """True/False as declared; None when the profile leaves it to the probe."""
        if feature not in FEATURES:
            raise KeyError(f"unknown feature {feature!r}")
        return self.features.get(feature)


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ProfileError(f"--profile {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"--profile {path}: not TOML: {exc}") from None
    unknown = set(data) - {"backend", "features", "ambiguities"}
    if unknown:
        raise ProfileError(f"--profile {path}: unknown table(s) {sorted(unknown)} (known: "
                           "backend, features, ambiguities)")
    backend = data.get("backend", {})
    features = data.get("features", {})
    ambig = data.get("ambiguities", {})
    for name, table in (("backend", backend), ("features", features),
                        ("ambiguities", ambig)):
        if not isinstance(table, dict):
            raise ProfileError(f"--profile {path}: [{name}] must be a table")
    for key, value in features.items():
        if key not in FEATURES:
            raise ProfileError(f"--profile {path}: unknown feature {key!r} (known: "
                               + ", ".join(FEATURES) + ")")
        if not isinstance(value, bool):
            raise ProfileError(f"--profile {path}: feature {key} must be true or false")
    for key, value in ambig.items():
        if not key.startswith("AMBIG-") or not isinstance(value, str):
            raise ProfileError(f"--profile {path}: [ambiguities] takes \"AMBIG-n\" = "
                               f"\"text\", not {key!r}")
    name = backend.get("name")
    if name is not None and not isinstance(name, str):
        raise ProfileError(f"--profile {path}: backend.name must be a string")
    return Profile(str(p), name, dict(features), dict(ambig))
