"""A few client integration tests against the project's Delinea emulator (over real loopback HTTP),
with the default ``delinea`` profile: the same guarantees as against scim2-server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from scim_pipeline.scim import ConnectionSettings, FilterRefused, ScimClient, ScimConflict, run_check

emulator = pytest.importorskip("scim_pipeline.emulator")

TOKEN_PATH = "/identity/api/oauth2/token/xpmplatform"


def _server(**config: Any) -> Any:
    return emulator.EmulatorServer(emulator.EmulatorConfig(**config))


def _settings(server: Any, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "token_url": server.token_url,
        "client_id": emulator.DEMO_CLIENT_ID,
        "client_secret": emulator.DEMO_CLIENT_SECRET,
        "max_retry_wait_s": 0.05,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


def _requests(server: Any, *, token: bool) -> list[Any]:
    return [r for r in server.emulator.requests if (r.path.endswith(TOKEN_PATH)) is token]


@pytest.fixture
def delinea() -> Iterator[Any]:
    with _server(page_size_cap=50) as server:
        yield server


async def test_refused_filter_sends_no_request(delinea: Any) -> None:
    async with ScimClient(_settings(delinea)) as client:
        with pytest.raises(FilterRefused):
            await client.search("Users", 'userName sw "a"')
        with pytest.raises(FilterRefused):
            await client.search("ContainerPermissions")
    assert delinea.emulator.requests == []


async def test_users_are_read_exactly_once_each_through_the_page_cap(delinea: Any) -> None:
    for i in range(234):
        delinea.emulator.store.create("Users", {"userName": f"user{i:04d}"})
    async with ScimClient(_settings(delinea, page_size=100)) as client:
        users = await client.search("Users")
    assert Counter(Counter(u["userName"] for u in users).values()) == {1: 234}
    assert len(_requests(delinea, token=False)) == 5  # ceil(234 / 50)


async def test_100_concurrent_calls_with_an_expired_token_make_one_token_request(
    delinea: Any,
) -> None:
    async with ScimClient(_settings(delinea, concurrency=100)) as client:
        created = await client.create("Users", {"userName": "someone"})
        assert client.auth is not None
        client.auth.expire()
        await asyncio.gather(*(client.get("Users", str(created.scim_id)) for _ in range(100)))
    assert len(_requests(delinea, token=True)) == 2


async def test_creates_through_faults_and_dropped_connections_end_without_duplicates() -> None:
    with _server(fault_rate=0.15, drop_rate=0.15, seed=3) as server:
        async with ScimClient(_settings(server, concurrency=16, max_attempts=10)) as client:
            results = await asyncio.gather(*(client.create("Users", {"userName": f"user{i:04d}"}) for i in range(200)))
            adoptions = client.stats.adoptions
        stored = server.emulator.store.count("Users")
        lost_after_write = sum(
            1 for r in server.emulator.requests if r.method == "POST" and r.note.startswith("dropped after write")
        )
    assert stored == 200
    assert len({r.scim_id for r in results}) == 200
    assert lost_after_write > 0  # the lost answers really happened …
    assert adoptions == lost_after_write  # … and each was adopted, not re-created


async def test_the_connection_check_passes_against_the_emulator(delinea: Any) -> None:
    report = await run_check(_settings(delinea))
    assert report.passed, report.render()
    assert [row.name for row in report.rows if not row.informational] == [
        "token",
        "Users",
        "Groups",
        "Containers",
        "ContainerPermissions",
        "PrivilegedData",
    ]
    assert "bulk: no" in report.render()


async def test_a_conflict_matched_on_external_id_is_adopted_through_a_filter_delinea_allows(delinea: Any) -> None:
    existing = delinea.emulator.store.create("Users", {"userName": "ann@example.com", "externalId": "E-1"})
    async with ScimClient(_settings(delinea)) as client:
        result = await client.create(
            "Users", {"userName": "ann@example.com", "externalId": "E-1"}, match_attribute="externalId"
        )
        assert result.adopted
        assert result.scim_id == existing["id"]
        # Same userName, another person: never adopted on the userName alone.
        delinea.emulator.store.create("Users", {"userName": "bob@example.com", "externalId": "E-2"})
        with pytest.raises(ScimConflict):
            await client.create(
                "Users", {"userName": "bob@example.com", "externalId": "E-3"}, match_attribute="externalId"
            )
    sent = [r.query for r in delinea.emulator.requests if r.method == "GET"]
    assert all("externalId" not in query for query in sent)


def test_the_client_runs_on_uvloop_too(delinea: Any) -> None:
    """A code location may run its assets on uvloop, whose transports do not subclass asyncio's."""
    uvloop = pytest.importorskip("uvloop")

    async def provision() -> list[str]:
        async with ScimClient(_settings(delinea, concurrency=8)) as client:
            created = await asyncio.gather(*(client.create("Users", {"userName": f"uv{i}"}) for i in range(40)))
            found = await client.find_one("Users", "userName", "uv7")
        assert found is not None
        return [str(result.scim_id) for result in created]

    ids = uvloop.run(provision())
    assert len(set(ids)) == 40
    assert {r.status for r in _requests(delinea, token=False)} == {200, 201}


@pytest.mark.alone  # the pacer against a rate limit: another test's CPU load changes what it measures
@pytest.mark.parametrize(("announce", "creates"), [("none", 800), ("x-ratelimit", 400), ("ietf", 400)])
async def test_default_settings_hold_the_emulators_rate_limit_with_no_failed_create(
    announce: str, creates: int
) -> None:
    """Creates against a 50 requests/s limit, with the client's default settings: none fails, 429s stay rare
    (rarer still when the limit is announced), and the rate found stays under the limit."""
    with _server(rate_limit_per_s=50, announce_rate_limit=announce) as server:
        async with ScimClient(_settings(server, max_retry_wait_s=60)) as client:
            results = await asyncio.gather(
                *(client.create("Users", {"userName": f"paced{i:04d}"}) for i in range(creates)),
                return_exceptions=True,
            )
            snapshot = client.pacer.snapshot()
        statuses = Counter(record.status for record in _requests(server, token=False))
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert statuses[201] == creates
    # Unannounced, finding the limit from an unpaced start costs a fixed 20-45 429s (16 requests in flight when the
    # burst allowance runs out, then the measurement's own); 800 creates make the share measure the pacing after it
    # (with 400, that fixed cost alone is 5-10 %).
    assert statuses[429] <= (0.005 if announce != "none" else 0.08) * sum(statuses.values())
    assert snapshot.rate_per_s is not None
    assert snapshot.rate_per_s <= 50 * 1.1
