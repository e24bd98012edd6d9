"""The vsnd description parsers (clauses.md §3.2, AMBIG-14)."""

from __future__ import annotations

import pytest

from harness.toolstack.vsnd_config import (
    VsndCard,
    VsndConfigError,
    VsndPcm,
    VsndStream,
    cards_from_obj,
    parse_toml,
    parse_xl_cfg,
    parse_xl_items,
    validate_cards,
)
from protocol_models.constants import PcmFormat

XL_CFG = """
# a guest config
name = "guest"
memory = 512
vsnd = [
    [ 'CARD, backend=0, short-name=Card, long-name=Virtual card, sample-rates=8000;48000',
      'pcm, name=dev0, channels-max=4',
      'stream, unique-id=alsa<hw:0>, type=p',
      "Stream, unique-id=1, type=C, sample-formats=s16_le;F32_LE, buffer-size=0x1000",
      'PCM, name=dev1',
      'stream, unique-id=2, type=c', ],
    [ 'card, backend=drv-dom', 'pcm', 'stream, type=p' ]
]
vif = [ 'bridge=br0' ]
"""


def test_xl_cfg_whole_file() -> None:
    cards = parse_xl_cfg(XL_CFG)
    assert len(cards) == 2
    c = cards[0]
    assert (c.backend_domid, c.backend_domname) == (0, None)
    assert (c.short_name, c.long_name) == ("Card", "Virtual card")
    assert c.params.sample_rates == [8000, 48000]
    assert [p.name for p in c.pcms] == ["dev0", "dev1"]
    assert c.pcms[0].params.channels_max == 4
    s0, s1 = c.pcms[0].streams
    assert (s0.unique_id, s0.type) == ("alsa<hw:0>", "p")
    # item and type are case-insensitive; a child belongs to the most recent parent
    assert (s1.unique_id, s1.type) == ("1", "c")
    assert s1.params.sample_formats == [PcmFormat.S16_LE, PcmFormat.F32_LE]
    assert s1.params.buffer_size == 4096  # strtoul base 0
    assert [s.unique_id for s in c.pcms[1].streams] == ["2"]
    assert cards[1].backend_domname == "drv-dom"
    assert cards[1].pcms[0].streams[0].type == "p"


def test_xl_cfg_line_and_bare_list_agree_with_objects() -> None:
    line = "vsnd = [ [ 'card, sample-rates=44100', 'pcm, name=a', 'stream, unique-id=0' ] ]"
    bare = "[ [ 'card, sample-rates=44100', 'pcm, name=a', 'stream, unique-id=0' ] ]"
    objs = [["card, sample-rates=44100", "pcm, name=a", "stream, unique-id=0"]]
    assert parse_xl_cfg(line) == parse_xl_cfg(bare) == parse_xl_items(objs)
    assert parse_xl_items(objs)[0].pcms[0].streams[0].type is None  # type= not given


@pytest.mark.parametrize(("items", "message"), [
    # the man page's own example: xl says "Invalid parameter: id=0"
    ([["pcm", "stream, id=0, type=p"]], "vsnd card 0, pcm 0, stream 0: invalid parameter 'id=0'"),
    ([["pcm", "pcm", "stream, type=x"]],
     "vsnd card 0, pcm 1, stream 0: invalid 'type' value 'x' (expected p or c)"),
    ([["pcm, Name=a"]], "vsnd card 0, pcm 0: invalid parameter 'Name=a'"),  # keys: case matters
    ([["card, name=a"]], "vsnd card 0: invalid parameter 'name=a'"),
    ([["stream, type=p"]], "before any pcm"),
    ([["speaker, x=1"]], "invalid vsnd item"),
    ([[]], "at least one vsnd item"),
    ([["card, channels-min=two"]], "vsnd card 0: invalid 'channels-min' value 'two'"),
    ([["card, sample-rates=8000;-1"]], "invalid 'sample-rates' value '-1'"),
    ([["card, sample-rates=0"]], "invalid 'sample-rates' value 0"),
    ([["card, buffer-size=4294967296"]], "invalid 'buffer-size'"),
])
def test_xl_errors_name_item_and_key(items: list[list[str]], message: str) -> None:
    with pytest.raises(VsndConfigError) as info:
        parse_xl_items(items)
    assert message in str(info.value)


def test_xl_format_names_are_libxl_enum_names_ambig14() -> None:
    """AMBIG-14: xl accepts f32_le (any case) and rejects the sndif name float_le."""
    card = parse_xl_items([["card, sample-formats=f32_le;F64_BE;mu_law"]])[0]
    assert card.params.sample_formats == [PcmFormat.F32_LE, PcmFormat.F64_BE, PcmFormat.MU_LAW]
    with pytest.raises(VsndConfigError, match=r"float_le.*f32_le.*AMBIG-14"):
        parse_xl_items([["card, sample-formats=s16_le;float_le"]])
    # the other modes, recorded as choices: sndif-only and either
    sndif = parse_xl_items([["card, sample-formats=float_le"]], formats="sndif")[0]
    assert sndif.params.sample_formats == [PcmFormat.F32_LE]
    with pytest.raises(VsndConfigError, match=r"sndif\.h name is 'float_le'"):
        parse_xl_items([["card, sample-formats=f32_le"]], formats="sndif")
    both = parse_xl_items([["card, sample-formats=f32_le;float64_le"]], formats="any")[0]
    assert both.params.sample_formats == [PcmFormat.F32_LE, PcmFormat.F64_LE]


@pytest.mark.parametrize("text", [
    "vsnd = [ [ 'card' ]",          # unterminated list
    "vsnd = [ [ 'card ] ]",         # unterminated string
    "vsnd = 'card'",                # not a list of lists
    "name = 'x'",                   # no vsnd at all
    "[ [ 'card' ] ] trailing",
])
def test_xl_cfg_syntax_errors(text: str) -> None:
    with pytest.raises(VsndConfigError):
        parse_xl_cfg(text)


TOML = """
[[card]]
backend = 0
short-name = "Card"
sample-rates = [8000, 48000]

[[card.pcm]]
name = "dev0"
channels-max = 4

[[card.pcm.stream]]
unique-id = "alsa<hw:0>"
type = "p"

[[card.pcm.stream]]
unique-id = 1
type = "C"
sample-formats = ["s16_le", "f32_le"]
buffer-size = 4096
"""


def test_toml_matches_xl() -> None:
    toml = parse_toml(TOML)
    xl = parse_xl_items([[
        "card, backend=0, short-name=Card, sample-rates=8000;48000",
        "pcm, name=dev0, channels-max=4",
        "stream, unique-id=alsa<hw:0>, type=p",
        "stream, unique-id=1, type=c, sample-formats=s16_le;f32_le, buffer-size=4096",
    ]])
    assert toml == xl


@pytest.mark.parametrize(("obj", "message"), [
    ({"pcm": [{"stream": [{"type": "x"}]}]}, "vsnd card 0, pcm 0, stream 0: invalid 'type'"),
    ({"pcm": [{"id": 0}]}, "vsnd card 0, pcm 0: invalid parameter 'id'"),
    ({"sample-rates": "8000"}, "vsnd card 0: invalid 'sample-rates' value '8000'"),
    ({"sample-rates": []}, "non-empty list"),
    ({"channels-max": True}, "invalid 'channels-max' value True"),
    ({"sample-formats": ["float_le"]}, "AMBIG-14"),
    ({"pcm": [{"name": 3}]}, "vsnd card 0, pcm 0: invalid 'name' value 3"),
])
def test_object_errors(obj: dict, message: str) -> None:
    with pytest.raises(VsndConfigError) as info:
        cards_from_obj(obj)
    assert message in str(info.value)


def test_toml_errors() -> None:
    with pytest.raises(VsndConfigError, match="vsnd TOML"):
        parse_toml("[[card]\n")
    with pytest.raises(VsndConfigError, match="top-level"):
        parse_toml("[[vsnd]]\n")


def test_validate_dataclasses() -> None:
    good = VsndCard(pcms=[VsndPcm(streams=[VsndStream(type="p")])])
    assert validate_cards([good]) == [good]
    with pytest.raises(VsndConfigError, match="vsnd card 0, pcm 0, stream 0: invalid 'type'"):
        validate_cards([VsndCard(pcms=[VsndPcm(streams=[VsndStream(type="P")])])])
    bad = VsndCard()
    bad.params.sample_formats = ["s16_le"]  # type: ignore[list-item]
    with pytest.raises(VsndConfigError, match="expected a PcmFormat"):
        validate_cards([bad])
