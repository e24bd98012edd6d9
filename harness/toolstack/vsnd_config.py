"""The vsnd device description: what a user asks the toolstack for (clauses.md §3.2).

Three ways in, one model out:

* xl.cfg text or its nested list of strings, parsed the way ``xl_parse.c: parse_vsnd_item``
  does (item keys CARD/PCM/STREAM case-insensitive, option keys case-sensitive, ``;`` lists,
  a child belongs to the most recent parent, unknown keys are "Invalid parameter");
* a TOML file with the same keys (``[[card]]`` / ``[[card.pcm]]`` / ``[[card.pcm.stream]]``);
* Python objects: the dataclasses themselves, or dicts shaped like the TOML.

Every error is a :class:`VsndConfigError` naming the item and key at fault.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from protocol_models.constants import PCM_FORMAT_BY_XS_NAME, PcmFormat

U32_MAX = 0xFFFF_FFFF

#: How ``sample-formats`` names are read.
#: ``libxl``: xl-faithful, libxl enum names case-insensitively (``f32_le``); the sndif
#: strings ``float_le``... are rejected as xl does ("Invalid pcm format", AMBIG-14).
#: ``sndif``: only the sndif.h XenStore strings (``float_le``). ``any``: either.
FormatNames = Literal["libxl", "sndif", "any"]


class VsndConfigError(ValueError):
    """A vsnd description that xl (or our stricter checks) would refuse."""


@dataclass
class VsndParams:
    """The common PCM parameters of card, pcm and stream. Empty list / 0 means "not set"
    (libxl writes a node only when set, and numbers only when non-zero)."""

    sample_rates: list[int] = field(default_factory=list)
    sample_formats: list[PcmFormat] = field(default_factory=list)
    channels_min: int = 0
    channels_max: int = 0
    buffer_size: int = 0


@dataclass
class VsndStream:
    unique_id: str | None = None
    type: str | None = None  # "p", "c", or None: libxl then writes no ``type`` node
    params: VsndParams = field(default_factory=VsndParams)


@dataclass
class VsndPcm:
    name: str | None = None
    params: VsndParams = field(default_factory=VsndParams)
    streams: list[VsndStream] = field(default_factory=list)


@dataclass
class VsndCard:
    """One vsnd device. xl's ``backend=`` is a domain id or name; a numeric value lands in
    ``backend_domid`` (libxl_domain_qualifier_to_domid), anything else in ``backend_domname``
    for the caller to resolve."""

    backend_domid: int = 0
    backend_domname: str | None = None
    short_name: str | None = None
    long_name: str | None = None
    params: VsndParams = field(default_factory=VsndParams)
    pcms: list[VsndPcm] = field(default_factory=list)


def where(card: int, pcm: int | None = None, stream: int | None = None) -> str:
    """The error prefix: ``vsnd card 0, pcm 1, stream 0``."""
    text = f"vsnd card {card}"
    if pcm is not None:
        text += f", pcm {pcm}"
    if stream is not None:
        text += f", stream {stream}"
    return text


# --- scalar parsers ------------------------------------------------------------------------

def parse_uint(text: str, what: str, key: str) -> int:
    """A C ``strtoul(s, NULL, 0)`` number (decimal, 0x hex, 0 octal), but strict: xl would
    silently turn garbage into 0 (= "not set"); we refuse it so a typo cannot vanish."""
    s = text.strip()
    try:
        if s.lower().startswith("0x"):
            value = int(s[2:], 16)
        elif len(s) > 1 and s.startswith("0"):
            value = int(s[1:], 8)
        else:
            value = int(s, 10)
        if not s[0].isdigit():
            raise ValueError(s)
    except (ValueError, IndexError):
        raise VsndConfigError(f"{what}: invalid {key!r} value {text!r} "
                              "(expected an unsigned number)") from None
    return _check_u32(value, what, key)


def _check_u32(value: Any, what: str, key: str, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VsndConfigError(f"{what}: invalid {key!r} value {value!r} (expected an integer)")
    low = 1 if positive else 0
    if not low <= value <= U32_MAX:
        raise VsndConfigError(f"{what}: invalid {key!r} value {value!r} "
                              f"(expected {low}..{U32_MAX})")
    return value


_LIBXL_FORMATS = {f.name.lower(): f for f in PcmFormat}


def parse_format(name: str, what: str, mode: FormatNames = "libxl") -> PcmFormat:
    """One ``sample-formats`` entry. libxl_enum_from_string compares case-insensitively."""
    key = name.strip().lower()
    if mode in ("libxl", "any") and key in _LIBXL_FORMATS:
        return _LIBXL_FORMATS[key]
    if mode in ("sndif", "any") and key in PCM_FORMAT_BY_XS_NAME:
        return PCM_FORMAT_BY_XS_NAME[key]
    hint = ""
    if mode == "libxl" and key in PCM_FORMAT_BY_XS_NAME:
        fmt = PCM_FORMAT_BY_XS_NAME[key]
        hint = (f"; xl rejects the sndif.h name, libxl calls it {fmt.name.lower()!r} "
                "(AMBIG-14)")
    elif mode == "sndif" and key in _LIBXL_FORMATS:
        hint = f"; the sndif.h name is {_LIBXL_FORMATS[key].xs_name!r}"
    raise VsndConfigError(f"{what}: invalid 'sample-formats' value {name!r} "
                          f"(not a {mode} PCM format name{hint})")


def parse_type(value: Any, what: str) -> str:
    """libxl_vsnd_stream_type_from_string: "p"/"c", case-insensitive."""
    if isinstance(value, str) and value.strip().lower() in ("p", "c"):
        return value.strip().lower()
    raise VsndConfigError(f"{what}: invalid 'type' value {value!r} (expected p or c)")


# --- (a) xl.cfg ----------------------------------------------------------------------------

_PARAM_KEYS = ("sample-rates", "sample-formats", "channels-min", "channels-max", "buffer-size")
_CARD_KEYS = ("backend", "short-name", "long-name")
_PCM_KEYS = ("name",)
_STREAM_KEYS = ("unique-id", "type")


def _xl_param(params: VsndParams, key: str, value: str, what: str,
              formats: FormatNames) -> None:
    if key in ("sample-rates", "sample-formats"):
        # split_string_into_string_list(";"): empty entries are dropped
        entries = [e.strip() for e in value.split(";") if e.strip()]
        if not entries:
            raise VsndConfigError(f"{what}: empty {key!r} list")
        if key == "sample-rates":
            params.sample_rates = [_check_u32(parse_uint(e, what, key), what, key,
                                              positive=True) for e in entries]
        else:
            params.sample_formats = [parse_format(e, what, formats) for e in entries]
    else:
        setattr(params, key.replace("-", "_"), parse_uint(value, what, key))


def _xl_options(spec: str) -> list[tuple[str, str, str]]:
    """Split an item into ``(token, key, value)``: strtok on "," (empty tokens vanish),
    trimmed; MATCH_OPTION compares ``key=`` case-sensitively."""
    out = []
    for raw in spec.split(",")[1:]:
        token = raw.strip()
        if not token:
            continue
        key, eq, value = token.partition("=")
        out.append((token, key if eq else "", value.strip()))
    return out


def parse_xl_items(cards: Sequence[Sequence[str]], *,
                   formats: FormatNames = "libxl") -> list[VsndCard]:
    """The ``vsnd`` value as Python objects: a list (one per card) of item strings."""
    if isinstance(cards, str) or not isinstance(cards, Sequence):
        raise VsndConfigError("vsnd: expected a list of lists of strings")
    result = []
    for ci, items in enumerate(cards):
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise VsndConfigError(f"{where(ci)}: expected a list of item strings, "
                                  f"got {items!r}")
        if not items:
            raise VsndConfigError(f"{where(ci)}: at least one vsnd item should be specified")
        card = VsndCard()
        for spec in items:
            _xl_item(card, ci, spec, formats)
        result.append(card)
    return result


def _xl_item(card: VsndCard, ci: int, spec: Any, formats: FormatNames) -> None:
    if not isinstance(spec, str):
        raise VsndConfigError(f"{where(ci)}: item {spec!r} is not a string")
    kind = spec.split(",", 1)[0].strip().lower()
    allowed: tuple[str, ...]
    if kind == "card":
        what, allowed = where(ci), _CARD_KEYS
    elif kind == "pcm":
        card.pcms.append(VsndPcm())
        what, allowed = where(ci, len(card.pcms) - 1), _PCM_KEYS
    elif kind == "stream":
        if not card.pcms:
            raise VsndConfigError(f"{where(ci)}: stream item {spec!r} comes before any pcm "
                                  "item (a child belongs to the most recent parent)")
        pcm = card.pcms[-1]
        pcm.streams.append(VsndStream())
        what = where(ci, len(card.pcms) - 1, len(pcm.streams) - 1)
        allowed = _STREAM_KEYS
    else:
        raise VsndConfigError(f"{where(ci)}: invalid vsnd item {spec!r} "
                              "(expected CARD, PCM or STREAM)")
    for token, key, value in _xl_options(spec):
        if key not in allowed and key not in _PARAM_KEYS:
            # xl: "Invalid parameter: id=0" (e.g. the man page's own example)
            raise VsndConfigError(f"{what}: invalid parameter {token!r}")
        if kind == "card" and key in _CARD_KEYS:
            _set_card_key(card, key, value, what)
        elif kind == "card":
            _xl_param(card.params, key, value, what, formats)
        elif kind == "pcm" and key == "name":
            card.pcms[-1].name = value
        elif kind == "stream" and key in _STREAM_KEYS:
            stream = card.pcms[-1].streams[-1]
            if key == "type":
                stream.type = parse_type(value, what)
            else:
                stream.unique_id = value
        else:
            target = card.pcms[-1] if kind == "pcm" else card.pcms[-1].streams[-1]
            _xl_param(target.params, key, value, what, formats)


def _set_card_key(card: VsndCard, key: str, value: str, what: str) -> None:
    if key == "backend":
        if value.isdigit():
            card.backend_domid = _check_u32(int(value), what, key)
            card.backend_domname = None
        elif value:
            card.backend_domname = value
        else:
            raise VsndConfigError(f"{what}: invalid 'backend' value '' (expected a domain)")
    elif key == "short-name":
        card.short_name = value
    elif key == "long-name":
        card.long_name = value


def parse_xl_cfg(text: str, *, formats: FormatNames = "libxl") -> list[VsndCard]:
    """Parse xl.cfg text: a whole config file, the ``vsnd = [...]`` setting alone, or the
    bare ``[[...], ...]`` list. Uses the libxlu syntax: '...' and "..." strings, ``#``
    comments, settings ended by a newline or ``;``, lists spanning lines."""
    tokens = _tokenize(text)
    if tokens and tokens[0][0] == "[":
        value, pos = _parse_value(tokens, 0)
        _expect_end(tokens, pos)
        return parse_xl_items(_as_nested(value), formats=formats)
    settings = _parse_settings(tokens)
    if "vsnd" not in settings:
        raise VsndConfigError("vsnd: no 'vsnd = [...]' setting in the xl.cfg text")
    return parse_xl_items(_as_nested(settings["vsnd"]), formats=formats)


def _as_nested(value: Any) -> list[list[str]]:
    if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
        raise VsndConfigError("vsnd: expected a list of lists of strings")
    return value


_Token = tuple[str, Any, int]  # (kind, value, line)


def _tokenize(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            out.append(("nl", None, line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "[],=;":
            out.append((c, None, line))
            i += 1
        elif c in "'\"":
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\n":
                    raise VsndConfigError(f"xl.cfg line {line}: unterminated string")
                if c == '"' and text[j] == "\\" and j + 1 < n:
                    j += 1
                    buf.append({"n": "\n", "t": "\t"}.get(text[j], text[j]))
                else:
                    buf.append(text[j])
                j += 1
            if j >= n:
                raise VsndConfigError(f"xl.cfg line {line}: unterminated string")
            out.append(("str", "".join(buf), line))
            i = j + 1
        else:
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_.+-"):
                j += 1
            if j == i:
                raise VsndConfigError(f"xl.cfg line {line}: unexpected character {c!r}")
            out.append(("atom", text[i:j], line))
            i = j
    return out


def _skip_nl(tokens: list[_Token], pos: int) -> int:
    while pos < len(tokens) and tokens[pos][0] == "nl":
        pos += 1
    return pos


def _parse_value(tokens: list[_Token], pos: int) -> tuple[Any, int]:
    pos = _skip_nl(tokens, pos)
    if pos >= len(tokens):
        raise VsndConfigError("xl.cfg: unexpected end of text, expected a value")
    kind, value, line = tokens[pos]
    if kind in ("str", "atom"):
        return value, pos + 1
    if kind != "[":
        raise VsndConfigError(f"xl.cfg line {line}: expected a value, got {kind!r}")
    items: list[Any] = []
    pos = _skip_nl(tokens, pos + 1)
    while pos < len(tokens) and tokens[pos][0] != "]":
        item, pos = _parse_value(tokens, pos)
        items.append(item)
        pos = _skip_nl(tokens, pos)
        if pos < len(tokens) and tokens[pos][0] == ",":
            pos = _skip_nl(tokens, pos + 1)
        elif pos < len(tokens) and tokens[pos][0] != "]":
            raise VsndConfigError(f"xl.cfg line {tokens[pos][2]}: expected ',' or ']'")
    if pos >= len(tokens):
        raise VsndConfigError(f"xl.cfg line {line}: unterminated list")
    return items, pos + 1


def _expect_end(tokens: list[_Token], pos: int) -> None:
    pos = _skip_nl(tokens, pos)
    if pos < len(tokens) and tokens[pos][0] == ";":
        pos = _skip_nl(tokens, pos + 1)
    if pos < len(tokens):
        raise VsndConfigError(f"xl.cfg line {tokens[pos][2]}: unexpected text after the list")


def _parse_settings(tokens: list[_Token]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    pos = 0
    while True:
        while pos < len(tokens) and tokens[pos][0] in ("nl", ";"):
            pos += 1
        if pos >= len(tokens):
            return settings
        kind, name, line = tokens[pos]
        if kind != "atom" or pos + 1 >= len(tokens) or tokens[pos + 1][0] != "=":
            raise VsndConfigError(f"xl.cfg line {line}: expected 'name = value'")
        value, pos = _parse_value(tokens, pos + 2)
        if pos < len(tokens) and tokens[pos][0] not in ("nl", ";"):
            raise VsndConfigError(f"xl.cfg line {tokens[pos][2]}: expected end of setting")
        settings[name] = value  # later settings override earlier ones, as in xl


# --- (b) TOML and (c) Python objects -------------------------------------------------------

def parse_toml(text: str, *, formats: FormatNames = "libxl") -> list[VsndCard]:
    """TOML with ``[[card]]``, ``[[card.pcm]]``, ``[[card.pcm.stream]]`` tables and the xl
    key names (``sample-rates = [8000, 48000]``, ``sample-formats = ["s16_le"]``...)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VsndConfigError(f"vsnd TOML: {exc}") from None
    extra = set(doc) - {"card"}
    if extra:
        raise VsndConfigError(f"vsnd TOML: unknown top-level key(s) {sorted(extra)} "
                              "(expected [[card]] tables)")
    return cards_from_obj(doc.get("card", []), formats=formats)


def load_toml(path: str | Path, *, formats: FormatNames = "libxl") -> list[VsndCard]:
    return parse_toml(Path(path).read_text(encoding="utf-8"), formats=formats)


def cards_from_obj(cards: Sequence[Mapping[str, Any]] | Mapping[str, Any], *,
                   formats: FormatNames = "libxl") -> list[VsndCard]:
    """Dicts shaped like the TOML (keys ``pcm`` / ``stream`` hold the children). A single
    mapping is one card."""
    if isinstance(cards, Mapping):
        cards = [cards]
    if isinstance(cards, str) or not isinstance(cards, Sequence):
        raise VsndConfigError("vsnd: expected a list of card tables")
    return [_card_from_obj(ci, c, formats) for ci, c in enumerate(cards)]


def _check_keys(obj: Any, allowed: Sequence[str], what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise VsndConfigError(f"{what}: expected a table, got {obj!r}")
    for key in obj:
        if key not in allowed and key not in _PARAM_KEYS:
            raise VsndConfigError(f"{what}: invalid parameter {key!r}")
    return obj


def _str_or_none(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise VsndConfigError(f"{what}: invalid {key!r} value {value!r} (expected a string)")


def _params_from_obj(obj: Mapping[str, Any], what: str, formats: FormatNames) -> VsndParams:
    p = VsndParams()
    for key in ("sample-rates", "sample-formats"):
        if key not in obj:
            continue
        value = obj[key]
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            raise VsndConfigError(f"{what}: invalid {key!r} value {value!r} "
                                  "(expected a non-empty list)")
        if key == "sample-rates":
            p.sample_rates = [_check_u32(v, what, key, positive=True) for v in value]
        else:
            p.sample_formats = [_format_obj(v, what, formats) for v in value]
    for key in ("channels-min", "channels-max", "buffer-size"):
        if key in obj:
            setattr(p, key.replace("-", "_"), _check_u32(obj[key], what, key))
    return p


def _format_obj(value: Any, what: str, formats: FormatNames) -> PcmFormat:
    if isinstance(value, PcmFormat):
        return value
    if not isinstance(value, str):
        raise VsndConfigError(f"{what}: invalid 'sample-formats' value {value!r}")
    return parse_format(value, what, formats)


def _card_from_obj(ci: int, obj: Any, formats: FormatNames) -> VsndCard:
    what = where(ci)
    obj = _check_keys(obj, (*_CARD_KEYS, "pcm"), what)
    card = VsndCard(short_name=_str_or_none(obj, "short-name", what),
                    long_name=_str_or_none(obj, "long-name", what),
                    params=_params_from_obj(obj, what, formats))
    backend = obj.get("backend", 0)
    if isinstance(backend, str) and not backend.isdigit():
        _set_card_key(card, "backend", backend, what)
    else:
        card.backend_domid = _check_u32(int(backend) if isinstance(backend, str) else backend,
                                        what, "backend")
    pcms = obj.get("pcm", [])
    if not isinstance(pcms, Sequence) or isinstance(pcms, str):
        raise VsndConfigError(f"{what}: 'pcm' must be a list of tables")
    for pi, pobj in enumerate(pcms):
        pwhat = where(ci, pi)
        pobj = _check_keys(pobj, (*_PCM_KEYS, "stream"), pwhat)
        pcm = VsndPcm(name=_str_or_none(pobj, "name", pwhat),
                      params=_params_from_obj(pobj, pwhat, formats))
        streams = pobj.get("stream", [])
        if not isinstance(streams, Sequence) or isinstance(streams, str):
            raise VsndConfigError(f"{pwhat}: 'stream' must be a list of tables")
        for si, sobj in enumerate(streams):
            swhat = where(ci, pi, si)
            sobj = _check_keys(sobj, _STREAM_KEYS, swhat)
            uid = sobj.get("unique-id")
            if isinstance(uid, int) and not isinstance(uid, bool):
                uid = str(uid)  # TOML users write unique-id = 0; xl treats it as a string
            pcm.streams.append(VsndStream(
                unique_id=_str_or_none({"unique-id": uid}, "unique-id", swhat),
                type=parse_type(sobj["type"], swhat) if "type" in sobj else None,
                params=_params_from_obj(sobj, swhat, formats)))
        card.pcms.append(pcm)
    return card


def validate_cards(cards: Sequence[VsndCard]) -> list[VsndCard]:
    """Check hand-built dataclasses with the same rules as the parsers; returns them."""
    for ci, card in enumerate(cards):
        if not isinstance(card, VsndCard):
            raise VsndConfigError(f"{where(ci)}: expected a VsndCard, got {card!r}")
        _check_u32(card.backend_domid, where(ci), "backend")
        _validate_params(card.params, where(ci))
        for pi, pcm in enumerate(card.pcms):
            _validate_params(pcm.params, where(ci, pi))
            for si, stream in enumerate(pcm.streams):
                w = where(ci, pi, si)
                if stream.type is not None and stream.type not in ("p", "c"):
                    raise VsndConfigError(f"{w}: invalid 'type' value {stream.type!r} "
                                          "(expected p or c)")
                _validate_params(stream.params, w)
    return list(cards)


def _validate_params(p: VsndParams, what: str) -> None:
    for r in p.sample_rates:
        _check_u32(r, what, "sample-rates", positive=True)
    for f in p.sample_formats:
        if not isinstance(f, PcmFormat):
            raise VsndConfigError(f"{what}: invalid 'sample-formats' value {f!r} "
                                  "(expected a PcmFormat)")
    for key in ("channels_min", "channels_max", "buffer_size"):
        _check_u32(getattr(p, key), what, key.replace("_", "-"))
