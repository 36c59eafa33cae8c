"""The SCIM client's HTTP/1.1 transport, against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.scim._transport import Http11Transport

from ..self_signed import self_signed_certificate

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback TCP server that counts connections and runs ``handler`` on each."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    state = RawServer(handler)
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return (await reader.readexactly(length)) if length else b""


def answer(body: bytes = b'{"ok": true}', *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()


@asynccontextmanager
async def client(**options: float | int) -> AsyncIterator[httpx.AsyncClient]:
    transport = Http11Transport(**options)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, timeout=2.0) as http:
        yield http


async def test_sequential_requests_share_one_connection() -> None:
    async with raw_server(keep_alive) as server, client() as http:
        for _ in range(5):
            response = await http.post(f"{server.url}/scim/v2/Users", json={"userName": "a"})
            assert response.status_code == 200
            assert response.json() == {"ok": True}
    assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_used() -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())  # keep-alive promised, then closed anyway
        await writer.drain()

    async with raw_server(one_per_connection) as server, client() as http:
        for _ in range(3):
            assert (await http.get(f"{server.url}/x")).status_code == 200
            await asyncio.sleep(0.05)  # let the server's FIN arrive
    assert server.connections == 3


async def test_connection_close_answer_is_not_reused() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(extra=b"Connection: close\r\n"))
        await writer.drain()
        await asyncio.sleep(1.0)  # even if the server lingers, the client must not send on this connection

    async with raw_server(closing) as server, client() as http:
        for _ in range(2):
            assert (await http.get(f"{server.url}/x")).status_code == 200
    assert server.connections == 2


async def test_no_answer_after_the_request_left_is_a_remote_protocol_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(hang_up) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"{server.url}/scim/v2/Users", json={"userName": "a"})


async def test_an_answer_cut_short_is_a_remote_protocol_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b'{"id": "12345"}')[:-5])
        await writer.drain()

    async with raw_server(cut) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{server.url}/x")


async def test_a_slow_answer_is_a_read_timeout() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2.0)

    async with raw_server(slow) as server:
        transport = Http11Transport()
        async with httpx.AsyncClient(transport=transport, timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"{server.url}/x")


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with raw_server(keep_alive) as server:
        url = server.url
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/x")


async def test_chunked_and_gzip_answers_arrive_whole_and_decoded() -> None:
    payload = b'{"Resources": [' + b",".join(b'{"id": "%d"}' % i for i in range(500)) + b"]}"
    packed = gzip.compress(payload)

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(packed), 700):
            part = packed[start : start + 700]
            writer.write(b"%x\r\n" % len(part) + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(chunked) as server, client() as http:
        response = await http.get(f"{server.url}/x")
    assert response.content == payload
    assert len(response.json()["Resources"]) == 500


async def test_at_most_max_connections_are_open_at_once() -> None:
    async def slow_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(answer())
            await writer.drain()

    async with raw_server(slow_keep_alive) as server, client(max_connections=2) as http:
        responses = await asyncio.gather(*(http.get(f"{server.url}/x") for _ in range(8)))
    assert all(r.status_code == 200 for r in responses)
    assert server.most_open == 2


async def test_waiting_longer_than_the_pool_timeout_is_a_pool_timeout() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1.0)
        writer.write(answer())
        await writer.drain()

    async with raw_server(slow) as server:
        transport = Http11Transport(max_connections=1)
        timeout = httpx.Timeout(5.0, pool=0.1)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
            first = asyncio.create_task(http.get(f"{server.url}/x"))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(f"{server.url}/x")
            assert (await first).status_code == 200


async def test_the_client_uses_it_unless_a_proxy_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = ConnectionSettings(base_url="http://127.0.0.1:9/scim/v2", profile="rfc7644")
    async with ScimClient(settings) as plain:
        assert isinstance(plain._http._transport, Http11Transport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    async with ScimClient(settings) as proxied:
        assert not isinstance(proxied._http._transport, Http11Transport)


async def test_the_client_sends_back_a_cookie_the_server_set_and_only_then() -> None:
    seen: list[bytes | None] = []

    async def sticky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answers = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            cookie = [line for line in head.split(b"\r\n") if line.lower().startswith(b"cookie:")]
            seen.append(cookie[0].split(b":", 1)[1].strip() if cookie else None)
            answers += 1
            extra = b"Set-Cookie: lb=node-2; Path=/\r\n" if answers == 2 else b""
            writer.write(answer(b'{"id": "1", "userName": "a"}', extra=extra))
            await writer.drain()

    async with raw_server(sticky) as server:
        settings = ConnectionSettings(base_url=f"{server.url}/scim/v2", profile="rfc7644")
        async with ScimClient(settings) as scim:
            for _ in range(3):
                await scim.get("Users", "1")
    assert seen == [None, None, b"lb=node-2"]


# -- keep-alive, the pool and the timeouts -------------------------------------------------------------------------


async def test_a_hundred_sequential_requests_use_one_connection() -> None:
    async with raw_server(keep_alive) as server, client() as http:
        for index in range(100):
            response = await http.post(f"{server.url}/scim/v2/Users", json={"userName": f"u{index}"})
            assert response.status_code == 200
    assert server.connections == 1


async def test_thirty_two_concurrent_requests_never_open_more_than_eight_sockets() -> None:
    async def slow_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.01)
            writer.write(answer())
            await writer.drain()

    async with raw_server(slow_keep_alive) as server, client(max_connections=8) as http:
        for _ in range(3):  # later rounds reuse what the first opened
            responses = await asyncio.gather(*(http.get(f"{server.url}/x") for _ in range(32)))
            assert all(r.status_code == 200 for r in responses)
    assert server.most_open == 8
    assert server.connections == 8


async def test_a_server_stalling_mid_body_is_a_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b'{"id": "12345"}')[:-5])
        await writer.drain()
        await asyncio.sleep(2.0)

    timeout = httpx.Timeout(5.0, read=0.2)
    async with raw_server(stall) as server, httpx.AsyncClient(transport=Http11Transport(), timeout=timeout) as http:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{server.url}/x")
        assert asyncio.get_running_loop().time() - started < 1.0


async def test_the_read_timeout_is_silence_not_the_whole_answer() -> None:
    """Bytes trickling in more often than the read timeout keep the answer alive, however long it takes in all --
    even while they do not complete what the reader waits for."""
    body = b'{"id": "12345", "userName": "trickle"}'

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        data = answer(body)
        head_end = data.index(b"\r\n\r\n") + 4
        writer.write(data[:head_end])
        for start in range(head_end, len(data), 5):  # 8 pieces, 0.1 s apart: 0.8 s in all
            await asyncio.sleep(0.1)
            writer.write(data[start : start + 5])
            await writer.drain()

    timeout = httpx.Timeout(5.0, read=0.3)
    async with raw_server(trickle) as server, httpx.AsyncClient(transport=Http11Transport(), timeout=timeout) as http:
        response = await http.get(f"{server.url}/x")
    assert response.content == body


async def test_an_idle_connection_past_the_keepalive_expiry_is_replaced() -> None:
    async with raw_server(keep_alive) as server, client(keepalive_expiry_s=0.1) as http:
        assert (await http.get(f"{server.url}/x")).status_code == 200
        assert (await http.get(f"{server.url}/x")).status_code == 200
        await asyncio.sleep(0.2)
        assert (await http.get(f"{server.url}/x")).status_code == 200
    assert server.connections == 2


async def test_bytes_the_server_sent_while_idle_make_the_connection_unusable() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")  # unasked, and kept open
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                await read_request(reader)
                writer.write(answer(b'{"wrong": "connection"}'))

    async with raw_server(chatty) as server, client() as http:
        assert (await http.get(f"{server.url}/x")).status_code == 200
        await asyncio.sleep(0.15)
        second = await http.get(f"{server.url}/x")
    assert second.status_code == 200
    assert second.json() == {"ok": True}
    assert server.connections == 2


async def test_a_cancelled_request_gives_its_slot_and_connection_back() -> None:
    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.3)
        writer.write(answer())
        await writer.drain()

    async with raw_server(slow_first) as server, client(max_connections=1) as http:
        first = asyncio.create_task(http.get(f"{server.url}/x"))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert (await http.get(f"{server.url}/x")).status_code == 200
    assert server.connections == 2  # the cancelled exchange's connection was closed, not reused


# -- the request -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "a\r\nX-Injected: yes"},
        {"X-Note": "a\nb"},
        {"X-Note": "a\rb"},
        {"X-Note": "a\x00b"},
        {"X-No\r\nte": "a"},
        {"X-Bad Name": "a"},
        {"X-Bad:Name": "a"},
    ],
)
async def test_cr_lf_nul_or_a_bad_name_in_a_header_is_refused_before_sending(headers: dict[str, str]) -> None:
    async with raw_server(keep_alive) as server, client() as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.get(f"{server.url}/x", headers=headers)
        await asyncio.sleep(0.05)
        assert server.connections == 0  # nothing was even opened
        assert (await http.get(f"{server.url}/x", headers={"X-Note": "fine\tvalue"})).status_code == 200


async def test_the_request_goes_out_as_httpx_built_it() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        seen.append(head + await reader.readexactly(length))
        writer.write(answer())
        await writer.drain()

    async with raw_server(record) as server, client() as http:
        await http.patch(f"{server.url}/scim/v2/Users/a%20b?attributes=id", content=b"{}", headers={"X-Case": "V"})
    request = seen[0]
    assert request.startswith(b"PATCH /scim/v2/Users/a%20b?attributes=id HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in request
    assert b"\r\nX-Case: V\r\n" in request
    assert request.endswith(b"\r\nContent-Length: 2\r\n\r\n{}")


async def test_a_request_asking_for_close_does_not_keep_the_connection() -> None:
    async with raw_server(keep_alive) as server, client() as http:
        for _ in range(2):
            assert (await http.get(f"{server.url}/x", headers={"Connection": "close"})).status_code == 200
    assert server.connections == 2


async def test_a_large_body_is_sent_whole_under_flow_control(monkeypatch: pytest.MonkeyPatch) -> None:
    from scim_pipeline.scim._transport import _Connection

    pauses = 0
    pause_writing = _Connection.pause_writing

    def counting_pause(self: _Connection) -> None:
        nonlocal pauses
        pauses += 1
        pause_writing(self)

    monkeypatch.setattr(_Connection, "pause_writing", counting_pause)
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB, more than the socket buffers take at once
    received: list[bytes] = []

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.sleep(0.2)  # let the client's buffer fill up
        received.append(await reader.readexactly(length))
        writer.write(answer())
        await writer.drain()

    async with raw_server(slow_reader) as server, client() as http:
        response = await http.post(f"{server.url}/x", content=payload)
    assert response.status_code == 200
    assert received == [payload]
    assert pauses >= 1


async def test_a_server_that_does_not_read_is_a_write_timeout() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3.0)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted sockets inherit a small window
    listener.bind(("127.0.0.1", 0))
    state = RawServer(deaf)
    server = await asyncio.start_server(state.serve, sock=listener)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        transport = Http11Transport()
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, write=0.3)) as http:
            with pytest.raises(httpx.WriteTimeout):
                await http.post(url, content=b"x" * (16 * 1024 * 1024))
    finally:
        server.close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    return self_signed_certificate(folder)


async def test_https_through_the_given_ssl_context(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    state = RawServer(keep_alive)
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0, ssl=server_context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
    try:
        trusting = Http11Transport(ssl_context=ssl.create_default_context(cafile=str(cert)))
        async with httpx.AsyncClient(transport=trusting, timeout=2.0) as http:
            for _ in range(3):
                assert (await http.get(url)).json() == {"ok": True}
        assert state.connections == 1
        async with httpx.AsyncClient(transport=Http11Transport(ssl_context=ssl.create_default_context())) as http:
            with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
                await http.get(url)
    finally:
        server.close()
