"""Helpers for tests against the project's emulator over real loopback HTTP (``EmulatorServer``)."""

from __future__ import annotations

from typing import Any

from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer, RequestRecord
from scim_pipeline.scim import ConnectionSettings

TOKEN_PATH = "/identity/api/oauth2/token/xpmplatform"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def emulated(**config: Any) -> EmulatorServer:
    """An emulator with the given knobs (start it with ``with``)."""
    return EmulatorServer(EmulatorConfig(**config))


def emulator_settings(server: EmulatorServer, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "token_url": server.token_url,
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "max_retry_wait_s": 0.05,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


def scim_requests(server: EmulatorServer) -> list[RequestRecord]:
    """The SCIM requests the emulator saw (token requests left out), oldest first."""
    return [record for record in server.emulator.requests if not record.path.endswith(TOKEN_PATH)]


def calls(server: EmulatorServer) -> list[tuple[str, int]]:
    """(method, status) of each SCIM request, then forgets them."""
    seen = [(record.method, record.status) for record in scim_requests(server)]
    server.emulator.clear_requests()
    return seen
