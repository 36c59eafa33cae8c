"""Fixtures: an in-process emulator reached through httpx.ASGITransport, already authenticated."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from scim_pipeline.emulator import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    EmulatorApp,
    EmulatorConfig,
    create_app,
)

TOKEN_PATH = "/identity/api/oauth2/token/xpmplatform"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


async def fetch_token(
    http: httpx.AsyncClient, client_id: str = DEMO_CLIENT_ID, secret: str = DEMO_CLIENT_SECRET
) -> httpx.Response:
    return await http.post(
        TOKEN_PATH,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "xpm.platform",
        },
    )


@asynccontextmanager
async def connect(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` whose base URL is the SCIM root and which carries a valid bearer token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        token = (await fetch_token(http)).json()["access_token"]
        http.base_url = httpx.URL("http://testserver/scim/v2/")
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


@pytest.fixture
def config() -> EmulatorConfig:
    return EmulatorConfig()


@pytest.fixture
def app(config: EmulatorConfig) -> Iterator[EmulatorApp]:
    app = create_app(config)
    yield app
    app.emulator.close()


@pytest.fixture
async def scim(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(app) as http:
        yield http


async def create_user(scim: httpx.AsyncClient, user_name: str, **attributes: Any) -> dict[str, Any]:
    response = await scim.post("Users", json={"schemas": [USER_SCHEMA], "userName": user_name, **attributes})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def create_group(
    scim: httpx.AsyncClient, display_name: str, member_ids: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": display_name,
    }
    if member_ids is not None:
        body["members"] = [{"value": member_id} for member_id in member_ids]
    response = await scim.post("Groups", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def member_values(group: dict[str, Any]) -> list[str]:
    return [member["value"] for member in group.get("members", [])]
