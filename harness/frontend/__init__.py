"""The reference frontend. Sans-IO cores: ``harness.card_config`` (XenStore subtree -> card
configuration, as Linux reads it) and ``xenbus_fsm`` (the XenBus handshake, as Linux runs
it); a driver doing the I/O sits on top."""

from harness.card_config import CardConfig, ConfigError, PcmHw, StreamConfig, read_card_config

from .xenbus_fsm import FrontendFsm

__all__ = ["CardConfig", "ConfigError", "FrontendFsm", "PcmHw", "StreamConfig",
           "read_card_config"]
