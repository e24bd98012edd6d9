"""``sndif-harness defects``: the catalogue of bugs the reference backend can be given
(``python -m harness.backends.reference --defect NAME``)."""

from __future__ import annotations

import argparse
import json
import sys


def _defects(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.defect_catalogue import AREAS, UnknownDefect

    if args.frontend:
        from harness.frontend.defects import CATALOGUE, lookup
        use = "sndif-harness certify-frontend --fe-defect NAME"
    else:
        from harness.backends.reference.defects import CATALOGUE, lookup
        use = "python -m harness.backends.reference --defect NAME"

    try:
        chosen = [lookup(n) for n in args.names] if args.names else list(CATALOGUE)
    except UnknownDefect as exc:
        raise UsageError(str(exc)) from None
    if args.area is not None:
        area = args.area.upper()
        if area not in AREAS:
            raise UsageError(f"unknown area {args.area!r}; areas are A-H")
        chosen = [d for d in chosen if d.area == area]
    if args.json:
        json.dump([d.as_dict() for d in chosen], sys.stdout, indent=2)
        print()
        return 0
    rows = [(d.name, d.area, " ".join(d.clauses), d.description) for d in chosen]
    head = ("NAME", "AREA", "CLAUSES", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    for row in [head, *rows]:
        print("  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)),
                         row[3]]))
    print(f"\n{len(chosen)} defects; use with: {use}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "defects", help="list the bugs the reference backend can be told to have",
        description="The defect catalogue: realistic backend bugs, each with the clause "
                    "IDs it violates and its area (A-H). Give one to the reference backend "
                    "with --defect NAME to check that a suite catches it.")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these defects")
    p.add_argument("--area", help="only this area (A-H)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--frontend", action="store_true",
                   help="the reference frontend's catalogue (certify-frontend --fe-defect)")
    p.set_defaults(handler=_defects)
