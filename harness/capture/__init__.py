"""Traces as packet captures: every traced message as a pcapng packet with a small header
of ours (direction, domain, stream, kind), a Wireshark Lua dissector generated from the
Scapy models, and the readable timeline of ``sndif-harness trace show``."""

from harness.capture.packets import (
    LINKTYPE,
    CapturePacket,
    Direction,
    Kind,
    packets_from_trace,
)
from harness.capture.pcapng import read_pcapng, write_pcapng

__all__ = ["LINKTYPE", "CapturePacket", "Direction", "Kind", "packets_from_trace",
           "read_pcapng", "write_pcapng"]
