"""What a run's world is made of, as one description (:class:`WorldSpec`), and the
user-facing ways to give its parts: a card as an xl.cfg ``vsnd`` string or a TOML file,
a backend spec, the audio host, the backend's environment, a ``unique-id`` template.

The CLI commands (demo, certify, ...) and the pytest options build a ``WorldSpec`` with
:func:`world_spec`; a bad value is a :class:`WorldSpecError` naming the bad part.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.toolstack.vsnd_config import (
    VsndCard,
    VsndConfigError,
    load_toml,
    parse_xl_cfg,
    parse_xl_items,
)
from harness.world.backend_spec import BackendSpec, BackendSpecError, parse_backend_spec
from harness.xen.platforms import PLATFORMS

#: One playback and one capture stream, 48 kHz S16_LE, 64 KiB buffers: as xl.cfg's
#: ``vsnd`` items (a guest on a real host gets its card from there)
DEFAULT_VSND: tuple[tuple[str, ...], ...] = ((
    "card, sample-rates=48000, sample-formats=s16_le, buffer-size=65536",
    "pcm, name=dev0", "stream, unique-id=pb, type=p", "stream, unique-id=cap, type=c",
),)
DEFAULT_CARD = parse_xl_items(DEFAULT_VSND)[0]


def xl_vsnd(cards: Sequence[Sequence[str]]) -> str:
    """The ``vsnd = ...`` value of xl.cfg for these items."""
    return "[" + ", ".join("[ " + ", ".join(f"'{i}'" for i in c) + " ]" for c in cards) + "]"


#: ``--audio``: where the backend's sound goes. ``wav``: the reference backend's own WAV
#: files (its default); ``pulse``: a private PulseAudio (null sink + known-signal source)
#: for any backend; ``alsa-file``: ALSA's file plugin (byte-exact, unpaced) for any
#: ALSA backend; ``none``: nothing set up (an external backend's own default).
AUDIO_MODES = ("wav", "pulse", "alsa-file", "none")
UNIQUE_ID_FIELDS = ("device", "pcm", "stream", "type")
_FIELD = re.compile(r"\{([^{}]*)\}")


class WorldSpecError(ValueError):
    """A world description that cannot be used; the message names the bad part."""


@dataclass(frozen=True)
class WorldSpec:
    """A run's world. Domain ids and devid follow the usual layout: the backend in
    dom0, the guest (the harness's frontend) in domain 1, device 0."""

    backend: BackendSpec = field(default_factory=lambda: BackendSpec("reference"))
    platform: str = "sim"
    card: VsndCard = field(default_factory=lambda: DEFAULT_CARD)
    audio: str | None = None  # None: "wav" for the reference backend, "none" otherwise
    backend_env: Mapping[str, str] = field(default_factory=dict)
    unique_id: str | None = None  # template for every stream's unique-id
    capture_source: str = "sine:1000"  # the reference backend's capture data under wav
    backend_domid: int = 0
    frontend_domid: int = 1
    devid: int = 0
    init_timeout: float = 10.0  # BE InitWait after the device is written (A-09: 10 s)
    connect_timeout: float = 10.0  # frontend Connected
    request_timeout_ms: int = 3000  # the frontend's per-request timeout (Linux's)
    kill_grace: float = 3.0  # SIGTERM -> SIGKILL
    #: the harness holds the toolstack (dom0's XenStore rights: it creates and removes
    #: the device). False: it runs in a guest of a real host, whose toolstack made the
    #: device (``xl create`` with ``vsnd``); cases that need those rights are N/A
    toolstack: bool = True

    @property
    def audio_mode(self) -> str:
        if self.audio is not None:
            return self.audio
        return "wav" if self.backend.kind == "reference" else "none"

    def replace(self, **changes: object) -> WorldSpec:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def load_card(vsnd: str | None = None, config: str | Path | None = None) -> VsndCard:
    """The card from an xl.cfg ``vsnd`` value or item list (``--vsnd``), or from a file
    (``--config``: ``.toml``, else xl.cfg syntax); the default card when neither."""
    if vsnd is not None and config is not None:
        raise WorldSpecError("--vsnd and --config: give the card one way, not both")
    try:
        if config is not None:
            path = Path(config)
            if not path.is_file():
                raise WorldSpecError(f"--config {config}: no such file")
            text = path.read_text()
            cards = load_toml(path) if path.suffix == ".toml" else parse_xl_cfg(text)
        elif vsnd is not None:
            text = vsnd.strip()
            cards = parse_xl_cfg(text if text.startswith("vsnd") else f"vsnd = {text}")
        else:
            return DEFAULT_CARD
    except VsndConfigError as exc:
        where = f"--config {config}" if config is not None else "--vsnd"
        raise WorldSpecError(f"{where}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorldSpecError(f"--config {config}: {exc}") from None
    if len(cards) != 1:
        raise WorldSpecError(f"the configuration describes {len(cards)} vsnd cards; the "
                             "harness drives one")
    return cards[0]


def check_unique_id(template: str) -> str:
    for name in _FIELD.findall(template):
        if name not in UNIQUE_ID_FIELDS:
            raise WorldSpecError(f"--unique-id {template!r}: unknown field {{{name}}} "
                                 "(known: " + ", ".join("{" + f + "}" for f in
                                                        UNIQUE_ID_FIELDS) + ")")
    return template


def card_with_unique_ids(card: VsndCard, template: str, *, sink: str | None,
                         source: str | None) -> VsndCard:
    """``card`` with every stream's ``unique-id`` set from ``template``: ``{device}`` is
    the audio host's sink (playback) or source (capture), ``{pcm}``/``{stream}`` the
    indices, ``{type}`` ``p``/``c``."""
    new = dataclasses.replace(card, pcms=[])
    for pi, pcm in enumerate(card.pcms):
        streams = []
        for si, st in enumerate(pcm.streams):
            device = source if st.type == "c" else sink
            if "{device}" in template and device is None:
                raise WorldSpecError(f"--unique-id {template!r}: {{device}} needs an audio "
                                     "host (--audio pulse)")
            values = {"device": device, "pcm": pi, "stream": si, "type": st.type or ""}
            uid = _substitute(template, values)
            streams.append(dataclasses.replace(st, unique_id=uid))
        new.pcms.append(dataclasses.replace(pcm, streams=streams))
    return new


def _substitute(template: str, values: Mapping[str, object]) -> str:
    return _FIELD.sub(lambda m: str(values[m.group(1)]), template)


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` items (``--backend-env``)."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise WorldSpecError(f"--backend-env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


def world_spec(*, backend: str = "reference", defects: Sequence[str] = (),
               platform: str = "sim", vsnd: str | None = None,
               config: str | Path | None = None, audio: str | None = None,
               backend_env: Sequence[str] = (), unique_id: str | None = None,
               **more: object) -> WorldSpec:
    """A :class:`WorldSpec` from user-facing option values, each checked."""
    try:
        bspec = parse_backend_spec(backend, list(defects))
    except BackendSpecError as exc:
        raise WorldSpecError(str(exc)) from None
    if platform not in PLATFORMS:
        raise WorldSpecError(f"--platform {platform!r}: expected one of "
                             + ", ".join(PLATFORMS))
    if audio is not None and audio not in AUDIO_MODES:
        raise WorldSpecError(f"--audio {audio!r}: expected one of " + ", ".join(AUDIO_MODES))
    if bspec.kind == "reference" and audio in ("alsa-file", "none"):
        raise WorldSpecError(f"--audio {audio}: the reference backend plays to WAV files "
                             "(wav) or to the audio host (pulse)")
    if platform == "real" and bspec.kind != "attach" \
            and int(more.get("backend_domid", 0)) != 0:  # type: ignore[call-overload]
        raise WorldSpecError("--platform real: the harness starts the backend as a process "
                             "of dom0, where it runs; a backend in another domain must be "
                             "running already (--backend attach)")
    if not more.get("toolstack", True) and bspec.kind != "attach":
        raise WorldSpecError("the harness runs in a guest: the backend runs in its own "
                             "domain already (--backend attach)")
    if platform == "real" and audio == "pulse":
        # files (wav, alsa-file) need nothing of the host; a sound server is its owner's
        raise WorldSpecError("--platform real: --audio pulse: the host's sound is set up by "
                             "the host's owner (alsa-file and wav need no sound device)")
    return WorldSpec(backend=bspec, platform=platform, card=load_card(vsnd, config),
                     audio=audio, backend_env=parse_env(backend_env),
                     unique_id=check_unique_id(unique_id) if unique_id else None,
                     **more)  # type: ignore[arg-type]
