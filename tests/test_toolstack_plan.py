"""The pure plan of libxl's XenStore writes (clauses.md §3.1, SND-A-01..A-03, A-18)."""

from __future__ import annotations

from harness.card_config import read_card_config
from harness.toolstack.plan import (
    RemoveTree,
    WaitForNode,
    WriteNode,
    WriteNodeUnless,
    plan_device,
    plan_removal,
)
from harness.toolstack.vsnd_config import VsndCard, VsndPcm, VsndStream, parse_xl_items
from harness.xen.api import Perm
from protocol_models.constants import PcmFormat

FE, BE, DEV = 3, 1, 0
FE_DIR = "/local/domain/3/device/vsnd/0"
BE_DIR = "/local/domain/1/backend/vsnd/3/0"
LX_DIR = "/libxl/3/device/vsnd/0"
FE_PERMS = (Perm("n", 3), Perm("r", 1))
BE_PERMS = (Perm("n", 1), Perm("r", 3))


def _card() -> VsndCard:
    return parse_xl_items([[
        "card, backend=1, short-name=S, long-name=L, sample-rates=8000;48000, channels-min=1",
        "pcm, name=dev0, sample-formats=s16_le;f32_le",
        "stream, unique-id=u0, type=p, buffer-size=8192",
        "stream, unique-id=u1",
    ]])[0]


def test_exact_nodes_and_values() -> None:
    plan = plan_device(_card(), FE, BE, DEV)
    assert (plan.fe_path, plan.be_path, plan.libxl_path) == (FE_DIR, BE_DIR, LX_DIR)
    assert plan.clear == (FE_DIR, BE_DIR, LX_DIR)
    assert plan.as_dict() == {
        FE_DIR: None,
        f"{FE_DIR}/backend": BE_DIR,
        f"{FE_DIR}/backend-id": "1",
        f"{FE_DIR}/state": "1",
        f"{FE_DIR}/long-name": "L",
        f"{FE_DIR}/short-name": "S",
        f"{FE_DIR}/sample-rates": "8000,48000",
        f"{FE_DIR}/channels-min": "1",
        f"{FE_DIR}/0": None,
        f"{FE_DIR}/0/name": "dev0",
        f"{FE_DIR}/0/sample-formats": "s16_le,f32_le",  # libxl enum names (AMBIG-14)
        f"{FE_DIR}/0/0": None,
        f"{FE_DIR}/0/0/unique-id": "u0",
        f"{FE_DIR}/0/0/type": "p",
        f"{FE_DIR}/0/0/buffer-size": "8192",
        f"{FE_DIR}/0/1": None,
        f"{FE_DIR}/0/1/unique-id": "u1",  # no type node: type= was not given
        BE_DIR: None,
        f"{BE_DIR}/frontend": FE_DIR,
        f"{BE_DIR}/frontend-id": "3",
        f"{BE_DIR}/online": "1",
        f"{BE_DIR}/state": "1",
        LX_DIR: None,
        f"{LX_DIR}/frontend": FE_DIR,
        f"{LX_DIR}/backend": BE_DIR,
        f"{LX_DIR}/frontend-id": "3",
        f"{LX_DIR}/online": "1",
        f"{LX_DIR}/state": "1",
    }
    # never versions/version (AMBIG-5)
    assert not any(p.endswith(("/version", "/versions")) for p in plan.as_dict())
    assert plan.be_state_path == f"{BE_DIR}/state"


def test_order_parents_before_children() -> None:
    paths = [w.path for w in plan_device(_card(), FE, BE, DEV)]
    for i, p in enumerate(paths):
        parent = p.rsplit("/", 1)[0]
        if parent in paths:
            assert paths.index(parent) < i, p
    assert paths[0] == FE_DIR and paths[1] == f"{FE_DIR}/backend"


def test_perms_sndA03() -> None:
    plan = plan_device(_card(), FE, BE, DEV)
    perms = {w.path: w.perms for w in plan}
    assert perms[FE_DIR] == FE_PERMS
    assert perms[f"{FE_DIR}/state"] == FE_PERMS
    assert perms[f"{FE_DIR}/backend"] == FE_PERMS
    assert perms[f"{FE_DIR}/0/0"] == FE_PERMS  # made implicitly: inherits the FE dir
    assert perms[BE_DIR] == BE_PERMS
    assert perms[f"{BE_DIR}/state"] == BE_PERMS
    assert perms[LX_DIR] == (Perm("n", 0),)
    # libxl's ro_fents: configuration readable, not writable, by the guest
    assert perms[f"{FE_DIR}/0/0/type"] == BE_PERMS
    fe_dir_style = plan_device(_card(), FE, BE, DEV, config_perms="fe-dir")
    assert {w.perms for w in fe_dir_style if w.path.startswith(FE_DIR)} == {FE_PERMS}


def test_zero_numbers_not_written_and_sndif_format_strings() -> None:
    card = VsndCard(pcms=[VsndPcm(streams=[VsndStream(type="c")])])
    card.params.sample_formats = [PcmFormat.F32_LE, PcmFormat.S8]
    nodes = plan_device(card, FE, BE, DEV).as_dict()
    assert f"{FE_DIR}/channels-min" not in nodes and f"{FE_DIR}/buffer-size" not in nodes
    assert nodes[f"{FE_DIR}/sample-formats"] == "f32_le,s8"
    sndif = plan_device(card, FE, BE, DEV, format_strings="sndif").as_dict()
    assert sndif[f"{FE_DIR}/sample-formats"] == "float_le,s8"


def test_notes_predict_linux_failures() -> None:
    card = parse_xl_items([["pcm", "stream", "pcm, name=x", "stream, unique-id=1"]])[0]
    notes = plan_device(card, FE, BE, DEV).notes
    assert any("pcm 0 writes no node" in n for n in notes)
    assert any("pcm 1, stream 0 has no type" in n and "ENOENT" in n for n in notes)
    assert any("ENODEV" in n for n in plan_device(VsndCard(), FE, BE, DEV).notes)
    assert plan_device(_card(), FE, BE, DEV).notes == (
        "pcm 0, stream 1 has no type: the Linux FE fails the whole card with ENOENT "
        "(SND-A-06)",)


def test_plan_round_trips_through_the_linux_reader() -> None:
    """What libxl writes is what the FE reads: the toolstack and card_config agree."""
    card = parse_xl_items([[
        "card, sample-rates=44100;48000, channels-max=6",
        "pcm, name=dev0", "stream, unique-id=a, type=p",
        "stream, unique-id=b, type=c, sample-rates=8000, channels-max=1",
    ]])[0]
    plan = plan_device(card, FE, BE, DEV)
    subtree = {w.path[len(FE_DIR) + 1:]: w.value.encode() for w in plan
               if w.path.startswith(FE_DIR + "/") and w.value is not None}
    cfg = read_card_config(subtree)
    assert cfg.ok
    pb, cap = cfg.streams
    assert (pb.type, pb.unique_id, pb.hw.rate_list, pb.hw.channels_max) == \
        ("p", "a", (44100, 48000), 6)
    assert (cap.type, cap.hw.rate_list, cap.hw.channels_min, cap.hw.channels_max) == \
        ("c", (8000,), 1, 1)


def test_removal_steps_sndA18() -> None:
    r = plan_removal(FE, BE, DEV)
    assert r.steps == (
        WriteNode(f"{BE_DIR}/online", "0"),
        WriteNodeUnless(f"{BE_DIR}/state", "5", ("6",)),
        WaitForNode(f"{BE_DIR}/state", "6", 10.0),
        RemoveTree(FE_DIR), RemoveTree(LX_DIR), RemoveTree(BE_DIR),
    )
    assert plan_removal(FE, BE, DEV, timeout=0.5).wait.timeout == 0.5
