"""The emulator on a real loopback socket: start/stop, persistence, concurrency, dropped connections."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer


def token_for(server: EmulatorServer) -> str:
    response = httpx.post(
        server.token_url,
        data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def client_for(server: EmulatorServer, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url + "/", headers={"Authorization": f"Bearer {token or token_for(server)}"}
    )


def test_server_starts_fast_on_an_ephemeral_loopback_port_and_stops() -> None:
    started = time.perf_counter()
    with EmulatorServer() as server:
        elapsed = time.perf_counter() - started
        assert server.base_url == f"http://127.0.0.1:{server.port}/scim/v2"
        assert server.token_url == f"http://127.0.0.1:{server.port}/identity/api/oauth2/token/xpmplatform"
        assert server.port > 0
        with client_for(server) as scim:
            assert scim.get("ServiceProviderConfig").status_code == 200
    assert elapsed < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/Users", timeout=1)


def test_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        EmulatorServer(host="0.0.0.0")  # noqa: S104


def test_state_and_tokens_survive_a_restart_on_the_same_file(tmp_path: Path) -> None:
    config = EmulatorConfig(db_path=tmp_path / "tenant.db")
    with EmulatorServer(config) as first, client_for(first) as scim:
        token = scim.headers["Authorization"].split()[1]
        ada = scim.post("Users", json={"userName": "ada"}).json()
        group = scim.post("Groups", json={"displayName": "Admins", "members": [{"value": ada["id"]}]}).json()
    with EmulatorServer(config) as second, client_for(second, token) as scim:
        assert scim.get(f"Users/{ada['id']}").json()["userName"] == "ada"
        assert [m["value"] for m in scim.get(f"Groups/{group['id']}").json()["members"]] == [ada["id"]]
        assert scim.post("Users", json={"userName": "ADA"}).status_code == 409


def test_two_processes_worth_of_servers_share_one_file(tmp_path: Path) -> None:
    config = EmulatorConfig(db_path=tmp_path / "tenant.db")
    with (
        EmulatorServer(config) as left,
        EmulatorServer(config) as right,
        client_for(left) as scim_left,
        client_for(right) as scim_right,
    ):
        errors: list[BaseException] = []

        def create(scim: httpx.Client, prefix: str) -> None:
            try:
                for index in range(40):
                    assert scim.post("Users", json={"userName": f"{prefix}{index}"}).status_code == 201
                    assert scim.post("Users", json={"userName": f"shared{index}"}).status_code in (201, 409)
            except BaseException as exc:  # reported below, in the test's own thread
                errors.append(exc)

        threads = [
            threading.Thread(target=create, args=(scim_left, "left")),
            threading.Thread(target=create, args=(scim_right, "right")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert scim_left.get("Users", params={"count": 0}).json()["totalResults"] == 120
        assert scim_right.get("Users", params={"filter": 'userName eq "left39"'}).json()["totalResults"] == 1


async def test_concurrent_requests_over_sockets_are_safe() -> None:
    with EmulatorServer() as server:
        token = await asyncio.to_thread(token_for, server)
        async with httpx.AsyncClient(
            base_url=server.base_url + "/", headers={"Authorization": f"Bearer {token}"}
        ) as scim:
            users = await asyncio.gather(*(scim.post("Users", json={"userName": f"u{index}"}) for index in range(30)))
            ids = [user.json()["id"] for user in users]
            group = (await scim.post("Groups", json={"displayName": "All"})).json()
            patches = await asyncio.gather(
                *(
                    scim.patch(
                        f"Groups/{group['id']}",
                        json={
                            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
                        },
                    )
                    for user_id in ids
                )
            )
            assert {response.status_code for response in patches} == {204}
            members = (await scim.get(f"Groups/{group['id']}")).json()["members"]
            assert sorted(member["value"] for member in members) == sorted(ids)
            assert server.emulator.store.version("Groups", group["id"]) == 'W/"31"'


def test_dropped_connections_look_like_lost_answers_and_after_write_ones_are_applied() -> None:
    with EmulatorServer(EmulatorConfig(drop_rate=1.0, seed=5)) as server, client_for(server) as scim:
        for index in range(12):
            with pytest.raises(httpx.RemoteProtocolError):
                scim.post("Users", json={"userName": f"user{index}"})
        records = [record for record in server.emulator.requests if record.path == "/scim/v2/Users"]
        written = {index for index, record in enumerate(records) if record.note.startswith("dropped after write")}
        assert 0 < len(written) < 12
        assert all(record.status == 0 for record in records)
        stored = {user["userName"] for user in server.emulator.store.search("Users").resources}
        assert stored == {f"user{index}" for index in written}


def test_rate_limit_over_sockets_sends_retry_after() -> None:
    with EmulatorServer(EmulatorConfig(rate_limit_per_s=5)) as server, client_for(server) as scim:
        statuses = [scim.get("Users") for _ in range(15)]
        limited = [response for response in statuses if response.status_code == 429]
        assert limited
        assert limited[0].headers["Retry-After"] == "1"
