"""TracedStore records every XenStore call with its outcome and changes nothing else."""

from __future__ import annotations

import pytest

from harness.trace import Trace
from harness.xen.api import Perm, Store
from harness.xen.traced import TracedStore
from protocol_models.xenstore import XsError


def test_every_call_is_recorded_with_its_outcome(sim) -> None:
    trace = Trace()
    store = TracedStore(sim.domain(0).store, trace)
    assert isinstance(store, Store)
    store.write("/t/a", b"1")
    assert store.read("/t/a") == b"1"
    assert store.directory("/t") == ["a"]
    store.set_perms("/t/a", [Perm("n", 0), Perm("r", 1)])
    with pytest.raises(XsError):
        store.read("/t/missing")
    store.watch("/t", "tok")
    assert store.next_event(2.0) is not None
    tx = store.transaction_start()
    assert store.transaction_end(tx)
    recs = [(r.fields["op"], r.fields.get("result"), r.fields.get("error"))
            for r in trace.select("xs")]
    assert recs[:5] == [("write", None, None), ("read", "1", None),
                        ("directory", ["a"], None), ("set_perms", None, None),
                        ("read", None, "ENOENT")]
    assert [r.fields["path"] for r in trace.select("watch")] == ["/t"]
    assert recs[-2][0] == "transaction_start" and recs[-1][:2] == ("transaction_end", True)
