"""The reference sndif backend: sans-IO cores (``xenbus_be``, ``stream``, ``pacing``,
``hw_space``, ``buffers``, ``channel``), audio endpoints (``audio_io``), and the I/O on top
(``device``, ``driver``, ``__main__``). Behaviour on every ambiguity: BEHAVIOUR.md."""

from .hw_space import HwParams, StreamSpace
from .pacing import Pacer
from .stream import StreamCore, StreamInfo, StreamState
from .xenbus_be import BackendFsm

__all__ = ["BackendFsm", "HwParams", "Pacer", "StreamCore", "StreamInfo", "StreamSpace",
           "StreamState"]
