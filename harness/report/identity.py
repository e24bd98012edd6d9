"""What a run was: the backend (spec, command, binary and its hash, version), the profile,
the harness and the platform, when and how far it ran. One list of rows, rendered by the
HTML and the Markdown report alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PLATFORMS = {"sim": "simulated Xen", "real": "real Xen"}


def identity_rows(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of a results document's identity; rows without a value left out."""
    run, be = doc["run"], doc["backend"]
    binary = be.get("binary") or {}
    platform = PLATFORMS.get(str(run.get("platform")), run.get("platform"))
    rows: list[tuple[str, Any]] = [
        ("backend", be.get("spec")), ("kind", be.get("kind")),
        ("injected defects", ", ".join(map(str, be.get("defects") or [])) or "none"),
        ("command", be.get("command")),
        ("binary", binary.get("path")), ("binary sha256", binary.get("sha256")),
        ("backend version", binary.get("version") or ("unknown" if binary else None)),
        ("profile", run.get("profile") or "none"),
        ("harness version", run.get("harness_version")), ("platform", platform),
        ("started", run.get("started")), ("finished", run.get("finished")),
        ("state", run.get("state")),
        ("cases", f"{run.get('cases_done')} done of {run.get('cases_collected')} collected"),
        ("command line", " ".join(map(str, run.get("command_line") or []))),
        ("python / pytest", f"{run.get('python')} / {run.get('pytest')}"),
    ]
    return [(k, str(v)) for k, v in rows if v is not None]
