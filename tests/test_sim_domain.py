"""A SimDomain bundles xenstore, grants and event channels as one api.Domain; creating and
destroying domains reaches xenstored (introduce, @releaseDomain)."""

from __future__ import annotations

import pytest

from harness.xen.api import EventChannels, Grants, Store

pytest.importorskip("harness.xen.xsclient")


def test_domain_bundle_and_xenstore_identity(sim):
    d1 = sim.domain(1)
    assert isinstance(d1.store, Store) and isinstance(d1.grants, Grants)
    assert isinstance(d1.evtchn, EventChannels)
    assert d1.store.domid == 1
    assert d1.store.get_domain_path(1) == "/local/domain/1"
    assert sim.env(1)["XENSTORED_PATH"] == sim.xenstored_path(1)


def test_destroy_fires_release_domain(sim):
    d0 = sim.domain(0)
    d0.store.watch("@releaseDomain", "rel")
    first = d0.store.next_event(2.0)
    assert first is not None and first.token == "rel"
    sim.destroy_domain(1)
    ev = d0.store.next_event(5.0)
    assert ev is not None and (ev.path, ev.token) == ("@releaseDomain", "rel")
