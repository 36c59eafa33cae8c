"""Fixtures of the SCIM core tests (helpers live in mock_service.py and loopback.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .loopback import LoopbackScimServer


@pytest.fixture
def loopback() -> Iterator[LoopbackScimServer]:
    """scim2-server with a page cap of 50, behind a token endpoint, on 127.0.0.1."""
    with LoopbackScimServer(page_cap=50) as server:
        yield server
