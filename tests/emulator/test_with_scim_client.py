"""The project's own ScimClient against the emulator: the staged failures it exists to survive."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer
from scim_pipeline.scim import ConnectionSettings, ScimClient, run_check


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig()) as server:
        yield server


def settings(server: EmulatorServer) -> ConnectionSettings:
    return ConnectionSettings(
        base_url=server.base_url,
        token_url=server.token_url,
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,
        max_retry_wait_s=0.05,
    )


async def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(server: EmulatorServer) -> None:
    async with ScimClient(settings(server)) as client:
        await client.search("Users")  # the token is fetched before the staged failure
        server.emulator.force("drop-after")
        result = await client.create("Users", {"userName": "ada@example.org"})
    assert result.adopted
    assert server.emulator.store.count("Users") == 1
    posts = [record for record in server.emulator.requests if record.method == "POST" and "Users" in record.path]
    assert [record.status for record in posts] == [0]


async def test_member_remove_that_matches_nothing_is_already_done(server: EmulatorServer) -> None:
    store = server.emulator.store
    ada = store.create("Users", {"userName": "ada"})
    group = store.create("Groups", {"displayName": "Admins"})
    async with ScimClient(settings(server)) as client:
        result = await client.patch(
            "Groups", group["id"], [{"op": "remove", "path": f'members[value eq "{ada["id"]}"]'}]
        )
    assert result.already_done


async def test_429_and_503_are_retried_after_retry_after(server: EmulatorServer) -> None:
    async with ScimClient(settings(server)) as client:
        await client.search("Users")
        server.emulator.force("429", "503")
        result = await client.create("Users", {"userName": "grace"})
    assert result.status == 201
    statuses = [
        record.status for record in server.emulator.requests if record.method == "POST" and "Users" in record.path
    ]
    assert statuses == [429, 503, 201]


async def test_the_connection_check_passes_and_fails_clearly_on_wrong_credentials(server: EmulatorServer) -> None:
    good = await run_check(settings(server))
    assert good.passed, good.render()
    wrong = settings(server).model_copy(update={"client_secret": SecretStr("not-the-secret")})
    bad = await run_check(wrong)
    assert not bad.passed
    assert "invalid_client" in bad.render()
    assert "not-the-secret" not in bad.render()
