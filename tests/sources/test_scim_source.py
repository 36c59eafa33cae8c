"""The SCIM source with the project's emulator playing the IdP (real loopback HTTP, OAuth, index paging)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources import RosterError
from scim_pipeline.sources.scim_source import ScimRosterSource, ScimSourceSettings
from scim_pipeline.sync.plan.mapping import build_roster

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture(scope="module")
def idp() -> Iterator[EmulatorServer]:
    """150 users (every tenth inactive, all but the first reporting to the first) and 4 groups of 10."""
    with EmulatorServer(EmulatorConfig(page_size_cap=50)) as server:
        store = server.emulator.store
        boss = store.create("Users", {"userName": "boss", "name": {"givenName": "Big", "familyName": "Boss"}})
        ids = [boss["id"]]
        for i in range(1, 150):
            user = store.create(
                "Users",
                {
                    "userName": f"idp-user{i:03d}",
                    "name": {"givenName": f"Given{i}", "familyName": f"Family{i}"},
                    "displayName": f"IdP User {i}",
                    "emails": [{"value": f"idp-user{i:03d}@idp.example", "type": "work", "primary": True}],
                    "title": "Clerk",
                    "active": i % 10 != 0,
                    ENTERPRISE: {"department": "Ops", "employeeNumber": f"{i:04d}", "manager": {"value": boss["id"]}},
                },
            )
            ids.append(user["id"])
        for g in range(4):
            store.create(
                "Groups",
                {"displayName": f"idp-group-{g}", "members": [{"value": i} for i in ids[g * 10 : g * 10 + 10]]},
            )
        yield server


def settings_for(server: EmulatorServer, **overrides: Any) -> ScimSourceSettings:
    values: dict[str, Any] = {
        "url": server.base_url,
        "token_url": server.token_url,
        "client_id": DEMO_CLIENT_ID,
        "client_secret": SecretStr(DEMO_CLIENT_SECRET),
        "page_size": 100,
        **overrides,
    }
    return ScimSourceSettings.model_validate(values)


def test_the_emulator_as_idp_yields_the_default_roster(idp: EmulatorServer) -> None:
    roster, report = ScimRosterSource(settings=settings_for(idp)).read_with_report()

    users = roster.users.frame.set_index("user_name")
    assert len(users) == 150
    row = users.loc["idp-user007"]
    assert row["email"] == "idp-user007@idp.example"
    assert row["given_name"] == "Given7"
    assert row["employee_number"] == "0007"
    assert row["department"] == "Ops"
    assert row["manager"] == "boss"
    assert users.loc["idp-user010", "active"] == "false"
    assert roster.memberships is not None
    assert len(roster.memberships.frame) == 40
    assert report.mode == "full"
    assert report.pages == 3 + 1  # the server caps pages at 50 users
    assert build_roster(roster, shards=2).rejected.empty


def test_a_wrong_secret_is_a_roster_error_without_the_secret(idp: EmulatorServer) -> None:
    source = ScimRosterSource(settings=settings_for(idp, client_secret=SecretStr("not-the-secret-99")))

    with pytest.raises(RosterError) as caught:
        source.read()

    assert "not-the-secret-99" not in str(caught.value)
    assert idp.base_url in str(caught.value)


def test_plain_http_off_loopback_is_refused() -> None:
    settings = ScimSourceSettings.from_env({"SCIM_SOURCE_SCIM_URL": "http://idp.example/scim/v2"})

    with pytest.raises(ConfigurationError, match="https is required"):
        ScimRosterSource(settings=settings).read()
