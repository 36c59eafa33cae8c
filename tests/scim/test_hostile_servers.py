"""The client against small hostile or broken servers over real loopback HTTP: secrets echoed back, trickled
answers, oversized and compressed-bomb answers, redirects, and a list that never ends."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from scim_pipeline.scim import (
    AuthenticationError,
    ConfigurationError,
    ConnectionSettings,
    PaginationError,
    ScimAnswerTooLarge,
    ScimClient,
    ScimPipelineError,
    ScimRedirected,
    ScimTransportError,
)

from .hostile import CLIENT_ID, CLIENT_SECRET, HostileServer, RawRequest, answer
from .mock_service import user_payload

GiB = 1 << 30


def settings_for(server: HostileServer, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "token_url": server.token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "max_attempts": 1,
        "timeout": 5.0,
        **overrides,
    }
    return ConnectionSettings(**values)


def everything_shown(error: BaseException) -> str:
    """An exception's message, repr, args and attributes, and those of its cause and context."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        parts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(parts)


# -- secrets that a server sends back ---------------------------------------------------------------------------


async def test_a_server_echoing_the_authorization_header_leaks_the_token_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        authorization = request.headers["authorization"]
        token = authorization.removeprefix("Bearer ")
        await answer(
            writer,
            400,
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400",
                "scimType": "invalidValue",
                "detail": f"refused request with Authorization: {authorization} (token {token})",
            },
            reason=f"Bad {token}",
            headers={"X-Echo": authorization},
        )

    caplog.set_level(logging.DEBUG)
    with HostileServer(echo) as server:
        async with ScimClient(settings_for(server)) as client:
            with pytest.raises(ScimPipelineError) as caught:
                await client.get("Users", "u1")
            shown = [everything_shown(caught.value), repr(client), repr(client.settings), repr(client.auth)]
        assert server.tokens, "a token was issued and sent"
    text = "\n".join([*shown, caplog.text, *(record.getMessage() for record in caplog.records)])
    for needle in [*server.tokens, CLIENT_SECRET]:
        assert needle not in text
    assert "invalidValue" in str(caught.value)  # the error still says what went wrong
    assert "[redacted]" in str(caught.value)


async def test_a_token_endpoint_echoing_the_secret_leaks_it_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    async def refuse(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        secret = request.form()["client_secret"]
        await answer(
            writer,
            401,
            {
                "error": f"invalid_client: the secret {secret} is wrong",
                "error_description": f"client_secret={secret}&client_id={CLIENT_ID}",
            },
            reason=f"Unauthorized {secret}",
        )

    caplog.set_level(logging.DEBUG)
    with HostileServer(answer_nothing, token_handler=refuse) as server:
        async with ScimClient(settings_for(server)) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.get("Users", "u1")
    text = "\n".join([everything_shown(caught.value), caplog.text])
    assert CLIENT_SECRET not in text
    assert "invalid_client" in str(caught.value)
    assert caught.value.oauth_error is not None
    assert CLIENT_SECRET not in caught.value.oauth_error


def test_credentials_in_the_base_url_are_refused_without_echoing_the_password() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_BASE_URL") as caught:
        ConnectionSettings(base_url="https://admin:Hunter2-pass@tenant.example.test/scim/v2")
    assert "Hunter2-pass" not in everything_shown(caught.value)


async def answer_nothing(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    await answer(writer, 204)


# -- deadlines -----------------------------------------------------------------------------------------------------


async def trickle(writer: asyncio.StreamWriter, data: bytes, *, per_s: float = 1.0) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1.0 / per_s)


@pytest.mark.parametrize("stage", ["headers", "body"])
async def test_an_answer_trickled_at_one_byte_a_second_ends_within_the_deadline(stage: str) -> None:
    body = json.dumps({"id": "u1", "userName": "u1"}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    async def slowly(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        if stage == "headers":
            await trickle(writer, head + body)
        else:
            writer.write(head)
            await trickle(writer, body)

    with HostileServer(slowly) as server:
        async with ScimClient(settings_for(server, timeout=2.0)) as client:
            started = time.monotonic()
            with pytest.raises(ScimTransportError, match="within 2 s"):
                await client.get("Users", "u1")
            elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.0


async def test_each_attempt_gets_the_deadline_and_the_attempts_stay_bounded() -> None:
    async def silent(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        await trickle(writer, b"HTTP/1.1 200 OK\r\n" * 10)

    with HostileServer(silent) as server:
        async with ScimClient(settings_for(server, timeout=1.0, max_attempts=2, max_retry_wait_s=0.1)) as client:
            started = time.monotonic()
            with pytest.raises(ScimTransportError) as caught:
                await client.get("Users", "u1")
            elapsed = time.monotonic() - started
    assert caught.value.attempts == 2
    assert elapsed < 2 * 1.0 + 1.0


# -- size limits ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that expands to 1 GiB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(GiB // len(block))]
    return b"".join([*parts, compressor.flush()])


@pytest.fixture
def huge_answers(gzip_bomb: bytes) -> Iterator[HostileServer]:
    async def huge(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        kind = request.path.rsplit("/", 1)[-1]
        if kind == "bomb":
            await answer(writer, 200, gzip_bomb, headers={"Content-Encoding": "gzip"})
            return
        chunk = b"x" * (1 << 20)
        if kind == "declared":
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {100 * len(chunk)}\r\n\r\n".encode())
            framed = chunk
        else:  # chunked: no size announced, 100 MB streamed
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        for _ in range(100):
            writer.write(framed)
            await writer.drain()
        if kind != "declared":
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    with HostileServer(huge) as server:
        yield server


PEAK_MEMORY_PROBE = r"""
import asyncio, re, sys
from pathlib import Path
from scim_pipeline.scim import ConnectionSettings, ScimAnswerTooLarge, ScimClient

async def main() -> None:
    settings = ConnectionSettings(base_url=sys.argv[1], max_attempts=1, timeout=60)
    async with ScimClient(settings) as client:
        try:
            await client.get("Users", sys.argv[2])
        except ScimAnswerTooLarge as error:
            print("refused:", error)

asyncio.run(main())
# VmHWM: this process's peak resident memory (getrusage's ru_maxrss would carry the parent's peak over the exec).
peak_kib = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
print("peak_mib:", peak_kib // 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["declared", "chunked", "bomb"])
def test_a_100_mb_answer_and_a_gzip_bomb_are_refused_in_bounded_memory(huge_answers: HostileServer, kind: str) -> None:
    """100 MB with its Content-Length, 100 MB chunked, and 1 MB of gzip expanding to 1 GiB: each refused, with the
    client process's peak memory far under 600 MB (measured in a process of its own)."""
    run = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_PROBE, huge_answers.base_url, kind],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    print(f"{kind}: peak {lines['peak_mib']} MiB")
    assert "SCIM_MAX_RESPONSE_BYTES" in lines["refused"]
    assert int(lines["peak_mib"]) < 300


async def test_an_answer_declaring_a_size_over_the_cap_is_refused_before_its_body_is_read(
    huge_answers: HostileServer,
) -> None:
    async with ScimClient(ConnectionSettings(base_url=huge_answers.base_url, max_attempts=1)) as client:
        started = time.monotonic()
        with pytest.raises(ScimAnswerTooLarge, match="GET Users answered HTTP 200"):
            await client.get("Users", "declared")
    assert time.monotonic() - started < 2.0


# -- redirects -----------------------------------------------------------------------------------------------------

ELSEWHERE = "https://collector.example.test:8443"


async def redirect_everything(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    await answer(writer, 307, reason="Temporary Redirect", headers={"Location": f"{ELSEWHERE}/steal?keep=secret"})


async def test_a_307_fails_the_call_naming_only_the_location_origin() -> None:
    with HostileServer(redirect_everything) as server:
        async with ScimClient(settings_for(server)) as client:
            with pytest.raises(ScimRedirected) as caught:
                await client.get("Users", "u1")
            with pytest.raises(ScimRedirected):
                await client.create("Users", user_payload("jane"))
    message = str(caught.value)
    assert "HTTP 307" in message
    assert ELSEWHERE in message
    assert "steal" not in message
    assert "keep=secret" not in message
    # Neither call was retried, and the create was not resolved by a look-up that would read "absent".
    assert [request.method for request in server.scim_requests()] == ["GET", "POST"]


async def test_a_paged_read_under_307_raises_and_never_reads_as_empty() -> None:
    with HostileServer(redirect_everything) as server:
        async with ScimClient(settings_for(server)) as client:
            with pytest.raises(ScimRedirected):
                await client.search("Users")
            with pytest.raises(ScimRedirected):
                await client.find_one("Users", "userName", "jane")
            with pytest.raises(ScimRedirected):
                await client.get_json("/ServiceProviderConfig")


async def test_a_redirecting_token_endpoint_is_an_authentication_error() -> None:
    async def redirect(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        await answer(writer, 302, reason="Found", headers={"Location": f"{ELSEWHERE}/login"})

    with HostileServer(answer_nothing, token_handler=redirect) as server:
        async with ScimClient(settings_for(server)) as client:
            with pytest.raises(AuthenticationError, match="HTTP 302 redirecting to https://collector"):
                await client.get("Users", "u1")
    assert len(server.requests) == 1  # the token request only; nothing went to the Location


# -- paging that never ends ----------------------------------------------------------------------------------------


async def test_a_list_claiming_a_billion_results_is_refused_on_its_first_page() -> None:
    async def flood(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        start, count = int(request.query["startIndex"]), int(request.query["count"])
        resources = [{"id": f"u{start + i}", "userName": f"user{start + i}"} for i in range(count)]
        await answer(writer, 200, {"totalResults": 10**9, "itemsPerPage": count, "Resources": resources})

    with HostileServer(flood) as server:
        async with ScimClient(settings_for(server, max_pages=40)) as client:
            with pytest.raises(PaginationError, match=r"totalResults=1000000000.*SCIM_MAX_PAGES=40"):
                await client.search("Users")
    assert len(server.scim_requests()) == 1


async def test_a_list_whose_total_keeps_growing_stops_one_page_past_its_first_total() -> None:
    async def growing(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        start, count = int(request.query["startIndex"]), int(request.query["count"])
        resources = [{"id": f"u{start + i}", "userName": f"user{start + i}"} for i in range(count)]
        await answer(writer, 200, {"totalResults": start + 3 * count, "Resources": resources})

    with HostileServer(growing) as server:
        async with ScimClient(settings_for(server, page_size=100)) as client:
            with pytest.raises(PaginationError, match="totalResults"):
                await client.search("Users")
    # The first page announced 301 resources: the fifth page (500 read) runs past 301 and a page to spare.
    assert len(server.scim_requests()) == 5
