"""``sndif-harness bench``: the harness's performance figures against their targets.

One module per group of rows (:mod:`.codec`, :mod:`.rings`, :mod:`.requests`,
:mod:`.fuzz`, :mod:`.certify`, :mod:`.pacing`, :mod:`.scale`, :mod:`.sim`), each with a
``run(quick: bool) -> list[Row]``; :mod:`.table` prints them and writes the JSON. Every
figure with a reference is a ratio against that reference measured in the same run, in
interleaved windows (:func:`.timing.interleaved_rates`), because the machine is shared.
"""

from __future__ import annotations

GROUPS = ("codec", "sim", "ring", "requests", "fuzz", "certify", "pacing", "scale")
