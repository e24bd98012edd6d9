"""Root pytest configuration: options that choose the backend and platform under test."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sndif-harness")
    group.addoption("--platform", default="sim", choices=("sim", "real"),
                    help="Xen platform: the simulated Xen (default) or a real Xen host")
