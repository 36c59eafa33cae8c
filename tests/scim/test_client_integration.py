"""The client over real loopback HTTP against scim2-server (a third-party RFC 7644 server) behind
a token endpoint, with faults injected in front of it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from scim_pipeline.scim import (
    AuthenticationError,
    FilterRefused,
    PaginationError,
    ScimClient,
    ScimPipelineError,
    ScimPreconditionFailed,
)

from .loopback import CLIENT_SECRET, LoopbackScimServer
from .mock_service import loopback_settings, user_payload


async def _create_users(client: ScimClient, count: int, prefix: str = "user") -> None:
    await asyncio.gather(*(client.create("Users", user_payload(f"{prefix}{i:05d}")) for i in range(count)))


async def test_refused_filter_sends_no_request(loopback: LoopbackScimServer) -> None:
    settings = loopback_settings(loopback, profile="delinea")
    async with ScimClient(settings) as client:
        with pytest.raises(FilterRefused, match="'or'"):
            await client.search("Users", 'userName eq "a" or userName eq "b"')
        with pytest.raises(FilterRefused, match="'id eq'"):
            await client.search("Users", 'id eq "2819c223"')
    assert loopback.scim_requests == []
    assert loopback.token_requests == 0


async def test_1234_users_are_read_exactly_once_each_through_a_page_cap_of_50(
    loopback: LoopbackScimServer,
) -> None:
    loopback.seed_users([f"user{i:05d}" for i in range(1234)])
    async with ScimClient(loopback_settings(loopback)) as client:
        users = await client.search("Users", page_size=200)  # the server caps each page at 50
    names = Counter(user["userName"] for user in users)
    assert len(names) == 1234
    assert set(names.values()) == {1}
    assert loopback.scim_request_count("GET") == 25  # ceil(1234 / 50)


async def test_a_server_that_ignores_start_index_is_detected(loopback: LoopbackScimServer) -> None:
    loopback.seed_users([f"user{i:05d}" for i in range(120)])
    loopback.faults.ignore_start_index = True
    async with ScimClient(loopback_settings(loopback)) as client:
        with pytest.raises(PaginationError):
            await client.search("Users")
    assert loopback.scim_request_count("GET") == 2


@pytest.mark.slow
async def test_1000_creates_through_30_percent_429_and_503_end_with_1000_users_no_duplicate(
    loopback: LoopbackScimServer,
) -> None:
    loopback.faults.rate = 0.3
    loopback.faults.retry_after = "1"
    settings = loopback_settings(loopback, concurrency=32, max_attempts=10)
    async with ScimClient(settings) as client:
        await _create_users(client, 1000)
        stats = client.stats
    users = loopback.users()
    assert len(users) == 1000
    assert len({user["userName"] for user in users}) == 1000
    assert len(loopback.injected) >= 250  # the faults really happened …
    assert stats.retries == len(loopback.injected)  # … and each was retried once it passed
    assert stats.retry_wait_s == pytest.approx(len(loopback.injected) * 1.0)  # Retry-After kept
    assert stats.adoptions == 0


async def test_a_create_whose_connection_is_cut_after_it_was_applied_is_adopted(
    loopback: LoopbackScimServer,
) -> None:
    loopback.faults.drop_after_apply = 1
    async with ScimClient(loopback_settings(loopback)) as client:
        result = await client.create("Users", user_payload("cut.after.apply"))
        assert client.stats.adoptions == 1
    assert result.adopted
    assert [u["userName"] for u in loopback.users()] == ["cut.after.apply"]
    assert loopback.scim_request_count("POST") == 1


async def test_a_create_whose_answer_times_out_is_adopted_not_duplicated(
    loopback: LoopbackScimServer,
) -> None:
    loopback.faults.drop_after_apply = 1
    loopback.faults.stall_after_apply_s = 1.0
    async with ScimClient(loopback_settings(loopback, timeout=0.3)) as client:
        result = await client.create("Users", user_payload("slow.answer"))
    assert result.adopted
    assert result.scim_id == loopback.users()[0]["id"]
    assert len(loopback.users()) == 1


async def test_a_conflicting_create_adopts_the_existing_user(loopback: LoopbackScimServer) -> None:
    async with ScimClient(loopback_settings(loopback)) as client:
        first = await client.create("Users", user_payload("Jane.Doe"))
        second = await client.create("Users", user_payload("jane.doe"))
    assert (first.adopted, second.adopted) == (False, True)
    assert second.scim_id == first.scim_id


async def test_100_concurrent_calls_with_an_expired_token_make_one_token_request(
    loopback: LoopbackScimServer,
) -> None:
    async with ScimClient(loopback_settings(loopback, concurrency=100)) as client:
        created = await client.create("Users", user_payload("someone"))
        assert created.scim_id is not None
        assert loopback.token_requests == 1
        assert client.auth is not None
        client.auth.expire()
        await asyncio.gather(*(client.get("Users", created.scim_id) for _ in range(100)))
    assert loopback.token_requests == 2


async def test_a_revoked_token_is_replaced_once(loopback: LoopbackScimServer) -> None:
    async with ScimClient(loopback_settings(loopback, concurrency=20)) as client:
        created = await client.create("Users", user_payload("someone"))
        assert created.scim_id is not None
        loopback.revoke_tokens()
        await asyncio.gather(*(client.get("Users", created.scim_id) for _ in range(20)))
    assert loopback.token_requests == 2


async def test_crud_round_trip(loopback: LoopbackScimServer) -> None:
    async with ScimClient(loopback_settings(loopback)) as client:
        user = await client.create("Users", user_payload("round.trip"))
        group = await client.create("Groups", {"displayName": "Trippers"})
        assert user.scim_id is not None
        assert group.scim_id is not None
        add = [{"op": "add", "path": "members", "value": [{"value": user.scim_id}]}]
        await client.patch("Groups", group.scim_id, add)
        fetched = await client.get("Groups", group.scim_id)
        assert fetched.resource is not None
        assert [m["value"] for m in fetched.resource["members"]] == [user.scim_id]
        replaced = await client.replace("Users", user.scim_id, {**user_payload("round.trip"), "title": "Pilot"})
        assert replaced.resource is not None
        assert replaced.resource["title"] == "Pilot"
        assert (await client.delete("Users", user.scim_id)).already_done is False
        assert (await client.delete("Users", user.scim_id)).already_done is True


async def test_secrets_stay_out_of_logs_reprs_and_errors(
    loopback: LoopbackScimServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    settings = loopback_settings(loopback, max_attempts=2)
    async with ScimClient(settings) as client:
        await client.create("Users", user_payload("a.user"))
        loopback.refuse_tokens_with = 401
        assert client.auth is not None
        client.auth.expire()
        with pytest.raises(AuthenticationError) as caught:
            await client.search("Users")
        texts += [str(caught.value), repr(caught.value), repr(client), repr(settings)]
        loopback.refuse_tokens_with = None
        loopback.faults.rate, loopback.faults.statuses = 1.0, (503,)
        with pytest.raises(ScimPipelineError) as failed:
            await client.find_one("Users", "userName", "a.user")
        texts += [str(failed.value), repr(failed.value)]
    texts.append(caplog.text)
    assert loopback.token_forms
    for text in texts:
        assert CLIENT_SECRET not in text
        assert "Bearer " not in text
    assert "a.user" not in "".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


async def test_a_stale_etag_is_refused_with_412(loopback: LoopbackScimServer) -> None:
    async with ScimClient(loopback_settings(loopback)) as client:
        created = await client.create("Users", user_payload("versioned"))
        assert created.resource is not None
        assert created.scim_id is not None
        version = created.resource["meta"]["version"]
        replace = [{"op": "replace", "path": "title", "value": "Pilot"}]
        await client.patch("Users", created.scim_id, replace, if_match=version)
        with pytest.raises(ScimPreconditionFailed):
            await client.patch("Users", created.scim_id, replace, if_match=version)


@pytest.mark.slow
async def test_a_token_that_expires_on_its_own_is_refreshed_once_for_100_callers() -> None:
    with LoopbackScimServer(token_lifetime_s=6.0) as server:
        async with ScimClient(loopback_settings(server, concurrency=100)) as client:
            created = await client.create("Users", user_payload("someone"))
            assert created.scim_id is not None
            await asyncio.sleep(6.0)  # past the token's lifetime (and its 10 % refresh margin)
            results = await asyncio.gather(*(client.get("Users", created.scim_id) for _ in range(100)))
        assert {result.status for result in results} == {200}
        assert server.token_requests == 2
        assert server.scim_request_count() == 101  # no 401, no resend: refreshed before expiry
