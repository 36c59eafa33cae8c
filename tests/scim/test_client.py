"""The async SCIM client on a mock transport: profile refusals, pagination, retries, safe creates,
idempotent deletes and member removals, concurrency and rate bounds, log hygiene."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from scim_pipeline.scim import (
    AmbiguousMatchError,
    ConfigurationError,
    FilterRefused,
    OperationRefused,
    PaginationError,
    ScimBadRequest,
    ScimClient,
    ScimConflict,
    ScimHTTPError,
    ScimNotFound,
    ScimRateLimited,
    ScimServiceUnavailable,
    ScimTransportError,
)
from scim_pipeline.scim.client import parse_retry_after

from .mock_service import (
    BASE_URL,
    MOCK_SECRET,
    MockScim,
    list_response,
    mock_settings,
    scim_error,
    scim_json,
    user_payload,
)


def _user(index: int) -> dict[str, Any]:
    return {"id": f"id-{index}", "userName": f"user{index}"}


# -- the profile refuses before any request ---------------------------------------------------


async def test_refused_filter_sends_no_request() -> None:
    service = MockScim()
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(FilterRefused, match="createdDate gt"):
            await client.search("Users", 'createdDate gt "2024-01-01T00:00:00Z"')
        with pytest.raises(FilterRefused, match="without a filter"):
            await client.search("ContainerPermissions")
    assert service.scim_requests == []
    assert service.token_requests == 0


async def test_refused_operation_sends_no_request() -> None:
    service = MockScim()
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(OperationRefused, match="delete on Groups"):
            await client.delete("Groups", "g1")
        with pytest.raises(OperationRefused, match="create on PrivilegedData"):
            await client.create("PrivilegedData", {"name": "secret"})
        with pytest.raises(OperationRefused, match="patch on Containers"):
            await client.patch("Containers", "c1", [])
    assert service.scim_requests == []


# -- requests on the wire ---------------------------------------------------------------------


async def test_requests_carry_scim_json_and_the_filter() -> None:
    service = MockScim(lambda request: list_response([], 0))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.search("Users", 'userName eq "a b"', attributes=["userName"])
    request = service.scim_requests[0]
    assert request.url.path == "/scim/v2/Users"
    assert request.url.params["filter"] == 'userName eq "a b"'
    assert request.url.params["startIndex"] == "1"
    assert request.url.params["count"] == "100"
    assert request.url.params["attributes"] == "userName"
    assert "application/scim+json" in request.headers["Accept"]


async def test_a_create_posts_scim_json_and_returns_the_resource() -> None:
    service = MockScim(lambda request: scim_json(201, {"id": "u1", "userName": "new.user"}))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.create("Users", user_payload("new.user"))
    assert (result.status, result.scim_id, result.adopted) == (201, "u1", False)
    request = service.scim_requests[0]
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/scim+json"
    assert b'"userName": "new.user"' in request.content


async def test_ids_are_escaped_into_one_path_segment() -> None:
    service = MockScim(lambda request: scim_json(200, {"id": "a/b"}))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.get("Users", "a/b?c")
    assert service.scim_requests[0].url.raw_path == b"/scim/v2/Users/a%2Fb%3Fc"


# -- pagination -------------------------------------------------------------------------------


def _paged_service(users: list[dict[str, Any]], cap: int) -> MockScim:
    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["startIndex"])
        count = min(int(request.url.params["count"]), cap)
        return list_response(users[start - 1 : start - 1 + count], len(users), start)

    return MockScim(answer)


async def test_a_smaller_items_per_page_is_honoured_and_reading_stops_at_total_results() -> None:
    users = [_user(i) for i in range(1, 124)]
    service = _paged_service(users, cap=10)
    async with ScimClient(mock_settings(page_size=50), transport=service.transport) as client:
        found = await client.search("Users")
    assert [u["id"] for u in found] == [u["id"] for u in users]
    starts = [int(r.url.params["startIndex"]) for r in service.scim_requests]
    assert starts == list(range(1, 124, 10))


async def test_iter_pages_streams_page_by_page() -> None:
    service = _paged_service([_user(i) for i in range(1, 6)], cap=2)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        pages = [page async for page in client.iter_pages("Users", page_size=2)]
    assert [len(p) for p in pages] == [2, 2, 1]


async def test_a_server_that_ignores_start_index_fails_clearly_instead_of_looping() -> None:
    users = [_user(i) for i in range(1, 200)]
    service = MockScim(lambda request: list_response(users[:50], len(users)))
    async with ScimClient(mock_settings(page_size=50), transport=service.transport) as client:
        with pytest.raises(PaginationError, match="ignore startIndex"):
            await client.search("Users")
    assert len(service.scim_requests) == 2


async def test_an_empty_page_before_total_results_is_not_a_silent_truncation() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["startIndex"])
        return list_response([_user(1), _user(2)] if start == 1 else [], 10, start)

    service = MockScim(answer)
    async with ScimClient(mock_settings(page_size=2), transport=service.transport) as client:
        with pytest.raises(PaginationError, match="totalResults=10"):
            await client.search("Users")


async def test_find_one_returns_the_exact_match_or_none() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params["filter"] == 'userName eq "Jane"':
            # A loose server also returns a near miss; only the exact match is taken.
            return list_response([{"id": "1", "userName": "jane"}, {"id": "2", "userName": "janet"}], 2)
        return list_response([], 0)

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        found = await client.find_one("Users", "userName", "Jane")
        missing = await client.find_one("Users", "userName", "nobody")
    assert found is not None
    assert found["id"] == "1"
    assert missing is None


# -- retries ----------------------------------------------------------------------------------


def _flaky(failures: list[httpx.Response], success: httpx.Response) -> MockScim:
    def answer(request: httpx.Request) -> httpx.Response:
        return failures.pop(0) if failures else success

    return MockScim(answer)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(status: int) -> None:
    service = _flaky([scim_error(status), scim_error(status)], scim_json(200, _user(1)))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.get("Users", "id-1")
        assert client.stats.retries == 2
    assert (result.status, result.attempts) == (200, 3)


async def test_a_create_failing_once_is_retried_with_the_same_attempt_numbers() -> None:
    service = _flaky([scim_error(503), scim_error(429)], scim_json(201, _user(1)))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.create("Users", user_payload("user1"))
    assert (result.status, result.attempts, result.adopted) == (201, 3, False)
    assert [r.method for r in service.scim_requests] == ["POST", "POST", "POST"]


async def test_every_request_carries_the_client_headers_token_and_timeouts() -> None:
    service = MockScim(lambda request: scim_json(200, _user(1)))
    async with ScimClient(mock_settings(timeout=7.0), transport=service.transport) as client:
        await client.patch("Users", "id-1", [{"op": "replace", "path": "active", "value": False}])
        await client.get("Users", "id-1", attributes=["userName"])
    patch, get = service.scim_requests
    assert patch.headers["content-type"] == "application/scim+json"
    assert patch.headers["accept"].startswith("application/scim+json")
    assert patch.headers["user-agent"].startswith("python-httpx/")
    assert patch.headers["authorization"] == "Bearer token-1"
    assert "content-type" not in get.headers
    assert get.url.params["attributes"] == "userName"
    assert patch.extensions["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}


async def test_retry_after_in_seconds_is_honoured_and_capped() -> None:
    service = _flaky([scim_error(429, retry_after="1"), scim_error(503, retry_after="120")], scim_json(200, _user(1)))
    settings = mock_settings(max_retry_wait_s=1.5)
    async with ScimClient(settings, transport=service.transport) as client:
        started = time.monotonic()
        await client.get("Users", "id-1")
        elapsed = time.monotonic() - started
        assert client.stats.retry_wait_s == pytest.approx(2.5)  # 1 s, then 120 s capped to 1.5 s
    assert elapsed >= 2.4


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now.timestamp()) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_attempts_after_5xx_are_bounded_then_the_typed_error_is_raised() -> None:
    service = MockScim(lambda request: scim_error(503, retry_after="0"))
    async with ScimClient(mock_settings(max_attempts=3), transport=service.transport) as client:
        with pytest.raises(ScimServiceUnavailable) as caught:
            await client.get("Users", "id-1")
    assert caught.value.attempts == 3
    assert "after 3 attempts" in str(caught.value)
    assert len(service.scim_requests) == 3


async def test_429s_are_retried_for_the_time_budget_not_a_count_of_attempts() -> None:
    service = MockScim(lambda request: scim_error(429, retry_after="0"))
    settings = mock_settings(max_attempts=2, retry_budget_s=0.5, adaptive_pacing=False)
    async with ScimClient(settings, transport=service.transport) as client:
        started = time.monotonic()
        with pytest.raises(ScimRateLimited) as caught:
            await client.get("Users", "id-1")
        elapsed = time.monotonic() - started
    assert caught.value.attempts > 2  # far more than max_attempts …
    assert 0.3 <= elapsed <= 1.5  # … until the budget ran out


async def test_a_429_then_success_within_the_budget_is_no_failure() -> None:
    service = _flaky([scim_error(429, retry_after="0")] * 10, scim_json(200, _user(1)))
    settings = mock_settings(max_attempts=2, adaptive_pacing=False)
    async with ScimClient(settings, transport=service.transport) as client:
        result = await client.get("Users", "id-1")
    assert (result.status, result.attempts) == (200, 11)


async def test_connection_failures_and_timeouts_are_retried_for_reads() -> None:
    errors: list[Exception] = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]

    def answer(request: httpx.Request) -> httpx.Response:
        if errors:
            raise errors.pop(0)
        return scim_json(200, _user(1))

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.get("Users", "id-1")
    assert result.attempts == 3


async def test_no_answer_at_all_is_a_transport_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    service = MockScim(answer)
    async with ScimClient(mock_settings(max_attempts=2), transport=service.transport) as client:
        with pytest.raises(ScimTransportError, match="no answer after 2 attempt") as caught:
            await client.get("Users", "id-1")
    assert caught.value.attempts == 2


async def test_non_retryable_errors_are_raised_at_once() -> None:
    service = MockScim(lambda request: scim_error(404, detail="User not found"))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(ScimNotFound):
            await client.get("Users", "missing")
    assert len(service.scim_requests) == 1


# -- creates are never resent blindly ---------------------------------------------------------


class CreateScript:
    """POST answers scripted per attempt; GET looks the user up in ``stored``."""

    def __init__(self, posts: list[Any]) -> None:
        self.posts = posts
        self.stored: list[dict[str, Any]] = []
        self.service = MockScim(self.answer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return list_response(self.stored, len(self.stored))
        step = self.posts.pop(0)
        if step == "apply-then-drop":
            self.stored.append({"id": "u1", "userName": "new.user"})
            raise httpx.ReadTimeout("the answer was lost")
        if step == "drop":
            raise httpx.RemoteProtocolError("server disconnected")
        if step == "created":
            self.stored.append({"id": "u1", "userName": "new.user"})
            return scim_json(201, {"id": "u1", "userName": "new.user"})
        assert isinstance(step, httpx.Response)
        return step

    def methods(self) -> list[str]:
        return [r.method for r in self.service.scim_requests]


async def test_a_create_whose_answer_was_lost_is_adopted_not_duplicated() -> None:
    script = CreateScript(["apply-then-drop"])
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        result = await client.create("Users", user_payload("new.user"))
        assert client.stats.adoptions == 1
    assert (result.adopted, result.scim_id) == (True, "u1")
    assert script.methods() == ["POST", "GET"]
    lookup = script.service.scim_requests[1]
    assert lookup.url.params["filter"] == 'userName eq "new.user"'


async def test_a_lost_create_that_did_not_land_is_sent_again() -> None:
    script = CreateScript(["drop", "created"])
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        result = await client.create("Users", user_payload("new.user"))
    assert (result.adopted, result.status, result.attempts) == (False, 201, 2)
    assert script.methods() == ["POST", "GET", "POST"]


@pytest.mark.parametrize("status", [429, 503])
async def test_a_create_refused_with_429_or_503_is_retried_without_a_lookup(status: int) -> None:
    script = CreateScript([scim_error(status, retry_after="0"), "created"])
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        result = await client.create("Users", user_payload("new.user"))
    assert result.status == 201
    assert script.methods() == ["POST", "POST"]


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_create_with_an_unknown_outcome_is_looked_up_first(status: int) -> None:
    script = CreateScript([scim_error(status), "created"])
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        result = await client.create("Users", user_payload("new.user"))
    assert result.status == 201
    assert script.methods() == ["POST", "GET", "POST"]


async def test_a_409_uniqueness_adopts_the_existing_resource() -> None:
    script = CreateScript([scim_error(409, "uniqueness")])
    script.stored.append({"id": "u0", "userName": "New.User"})
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        result = await client.create("Users", user_payload("new.user"))
    assert (result.adopted, result.scim_id) == (True, "u0")


async def test_a_409_with_nothing_to_adopt_is_a_conflict() -> None:
    script = CreateScript([scim_error(409, "uniqueness")])
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        with pytest.raises(ScimConflict):
            await client.create("Users", user_payload("new.user"))


async def test_a_lost_create_without_a_match_attribute_is_never_resent() -> None:
    script = CreateScript(["drop"])
    async with ScimClient(mock_settings(), transport=script.service.transport) as client:
        with pytest.raises(ScimTransportError):
            await client.create("ContainerPermissions", {"container": {"value": "c1"}, "user": {"value": "u1"}})
    assert script.methods() == ["POST"]


async def test_a_group_create_is_matched_by_display_name() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadTimeout("lost")
        assert request.url.params["filter"] == 'displayName eq "Finance"'
        return list_response([{"id": "g1", "displayName": "Finance"}], 1)

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.create("Groups", {"displayName": "Finance"})
    assert result.adopted


# -- idempotent deletes and member removals ---------------------------------------------------


async def test_delete_404_counts_as_already_done() -> None:
    service = MockScim(lambda request: scim_error(404))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.delete("Users", "gone")
        assert client.stats.already_done == 1
    assert (result.already_done, result.status) == (True, 404)


async def test_a_member_removal_answering_no_target_counts_as_already_done() -> None:
    service = MockScim(lambda request: scim_error(400, "noTarget"))
    remove = [{"op": "remove", "path": 'members[value eq "u1"]'}]
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.patch("Groups", "g1", remove)
    assert result.already_done
    body = service.scim_requests[0].content
    assert b"urn:ietf:params:scim:api:messages:2.0:PatchOp" in body


async def test_no_target_on_other_patches_is_an_error() -> None:
    service = MockScim(lambda request: scim_error(400, "noTarget"))
    replace = [{"op": "replace", "path": "title", "value": "x"}]
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(ScimBadRequest):
            await client.patch("Users", "u1", replace)


async def test_a_patch_answering_204_has_no_resource() -> None:
    service = MockScim(lambda request: httpx.Response(204))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.patch("Users", "u1", [{"op": "replace", "path": "active", "value": False}])
    assert (result.status, result.resource) == (204, None)


async def test_an_error_page_from_a_proxy_does_not_crash_the_client() -> None:
    page = httpx.Response(503, text="<html><h1>Service Unavailable</h1></html>", headers={"Content-Type": "text/html"})
    service = MockScim(lambda request: page)
    async with ScimClient(mock_settings(max_attempts=2), transport=service.transport) as client:
        with pytest.raises(ScimServiceUnavailable, match="HTTP 503"):
            await client.replace("Users", "u1", user_payload("x"))


# -- bounds shared by all callers -------------------------------------------------------------


async def test_concurrency_is_bounded_across_all_callers() -> None:
    in_flight = 0
    peak = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return scim_json(200, _user(1))

    service = MockScim(answer)
    async with ScimClient(mock_settings(concurrency=4), transport=service.transport) as client:
        await asyncio.gather(*(client.get("Users", "id-1") for _ in range(40)))
    assert peak == 4


async def test_the_rate_limit_spaces_requests_across_all_callers() -> None:
    stamps: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        return scim_json(200, _user(1))

    service = MockScim(answer)
    settings = mock_settings(rate_limit=50, concurrency=16)
    async with ScimClient(settings, transport=service.transport) as client:
        await asyncio.gather(*(client.get("Users", "id-1") for _ in range(21)))
    assert stamps[-1] - stamps[0] >= 20 / 50 * 0.95


async def test_bulk_is_never_used() -> None:
    service = MockScim(lambda request: scim_json(201, {"id": "x", "userName": "u"}))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await asyncio.gather(*(client.create("Users", user_payload(f"u{i}")) for i in range(20)))
    assert len(service.scim_requests) == 20
    assert all("Bulk" not in r.url.path for r in service.scim_requests)


# -- logs -------------------------------------------------------------------------------------


async def test_httpx_info_logs_carry_no_filter_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    service = MockScim(lambda request: list_response([], 0))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.find_one("Users", "userName", "jane.personal.data")
    httpx_records = [r for r in caplog.records if r.name == "httpx"]
    assert httpx_records, "httpx logs requests at INFO"
    assert "jane.personal.data" not in caplog.text
    assert "jane" not in caplog.text
    assert f"GET {BASE_URL}/Users?… " in httpx_records[-1].getMessage()


async def test_full_urls_appear_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="scim_pipeline.scim")
    service = MockScim(lambda request: list_response([], 0))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.find_one("Users", "userName", "jane")
    records = [r for r in caplog.records if "jane" in r.getMessage()]
    assert records
    assert {r.levelno for r in records} == {logging.DEBUG}
    assert MOCK_SECRET not in caplog.text


# -- TLS --------------------------------------------------------------------------------------


# A CA bundle that verifies a real self-signed server: tests/reliability/test_secrets.py (over loopback TLS).


def test_an_unreadable_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="SCIM_CA_BUNDLE"):
        ScimClient(mock_settings(ca_bundle=bundle))


# -- odd servers ------------------------------------------------------------------------------


async def test_two_exact_matches_are_ambiguous_and_nothing_is_adopted() -> None:
    twins = [{"id": "1", "userName": "jane"}, {"id": "2", "userName": "JANE"}]
    service = MockScim(lambda request: list_response(twins, 2))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(AmbiguousMatchError, match="2 Users have the same userName"):
            await client.find_one("Users", "userName", "jane")


async def test_a_list_without_total_results_is_read_until_a_short_page() -> None:
    users = [_user(i) for i in range(1, 8)]

    def answer(request: httpx.Request) -> httpx.Response:
        start, count = int(request.url.params["startIndex"]), int(request.url.params["count"])
        return scim_json(200, {"Resources": users[start - 1 : start - 1 + count]})

    service = MockScim(answer)
    async with ScimClient(mock_settings(page_size=3), transport=service.transport) as client:
        found = await client.search("Users")
    assert len(found) == 7
    assert len(service.scim_requests) == 3


async def test_without_client_credentials_no_token_is_requested() -> None:
    service = MockScim(lambda request: scim_json(200, _user(1)))
    settings = mock_settings(client_id=None, client_secret=None)
    async with ScimClient(settings, transport=service.transport) as client:
        await client.get("Users", "id-1")
        assert client.auth is None
    assert service.token_requests == 0
    assert "Authorization" not in service.scim_requests[0].headers


async def test_a_2xx_answer_that_is_not_json_is_a_clear_error() -> None:
    service = MockScim(lambda request: httpx.Response(200, text="<html>maintenance</html>"))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(ScimHTTPError, match="not a JSON object"):
            await client.get("Users", "id-1")
