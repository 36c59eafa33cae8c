"""A lean HTTP/1.1 keep-alive transport for the SCIM client: asyncio streams and h11, one idle list per origin.

Why: profiling the client showed httpcore's connection pool costing most of the client's CPU per request — every
request and every release walks all pooled connections and asks each idle one, through anyio, whether its socket is
readable (a system call), so the cost grows with the concurrency. This transport keeps idle connections in a list,
checks only the one it takes (the stream's EOF flag, no system call), reads each answer whole (SCIM answers are small
JSON documents) and gives the connection back at once.

It raises the same ``httpx`` exceptions as httpx's own transport (``ConnectError``/``ConnectTimeout`` before the
request left, ``ReadError``/``ReadTimeout``/``WriteError``/``RemoteProtocolError`` after it may have), which the
client's retry and adoption logic relies on. It speaks HTTP/1.1 only and knows no proxies: the client uses httpx's
own transport whenever a proxy is configured in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

__all__ = ["Http11Transport"]

_READ_SIZE = 65_536
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def is_usable(self, now: float, keepalive_expiry_s: float) -> bool:
        """Still open, not closed by the server while idle, and not idle for too long."""
        return (
            not self.reader.at_eof()
            and self.reader.exception() is None
            and not self.writer.is_closing()
            and now - self.idle_since < keepalive_expiry_s
        )

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Answer:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    content: bytes
    reusable: bool


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over keep-alive connections, at most ``max_connections`` at once (further requests wait, up to
    the request's ``pool`` timeout, and then raise ``httpx.PoolTimeout``)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 20,
        keepalive_expiry_s: float = 5.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive_expiry_s = keepalive_expiry_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"Http11Transport(idle={sum(len(d) for d in self._idle.values())}, busy={len(self._busy)})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin: Origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        await self._acquire_slot(request, timeouts.get("pool"))
        try:
            connection = self._take_idle(origin)
            if connection is None:
                connection = await self._connect(request, origin, timeouts.get("connect"))
            self._busy.add(connection)
            try:
                answer = await _exchange(connection, request, body, timeouts)
            except BaseException:
                connection.close()
                raise
            finally:
                self._busy.discard(connection)
            if answer.reusable:
                connection.h11.start_next_cycle()
                connection.idle_since = time.monotonic()
                self._idle.setdefault(origin, deque()).append(connection)
            else:
                connection.close()
        finally:
            self._slots.release()
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            content=answer.content,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
        )

    async def aclose(self) -> None:
        connections = [connection for idle in self._idle.values() for connection in idle] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for connection in connections:
            connection.close()
        # Let TLS close-notify and socket shutdown finish before the event loop may end; a peer that is already gone
        # makes no difference here.
        for connection in connections:
            with contextlib.suppress(OSError, ssl.SSLError):
                await connection.writer.wait_closed()

    async def _acquire_slot(self, request: httpx.Request, pool_timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection became free in time", request=request) from None

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used one is the least likely to be closed by the server
            if connection.is_usable(now, self._keepalive_expiry_s):
                return connection
            connection.close()
        return None

    async def _connect(self, request: httpx.Request, origin: Origin, connect_timeout_s: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._ssl_context if scheme == "https" else None
        if scheme == "https" and tls is None:
            tls = httpx.create_ssl_context()
        try:
            async with asyncio.timeout(connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls is not None else None, limit=_READ_SIZE
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except OSError as error:  # ssl.SSLError is an OSError too
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}", request=request) from None
        return _Connection(reader, writer)


async def _exchange(
    connection: _Connection, request: httpx.Request, body: bytes, timeouts: Mapping[str, float | None]
) -> _Answer:
    protocol = connection.h11
    try:
        data = protocol.send(
            h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
        )
        if body:
            data += protocol.send(h11.Data(data=body))
        data += protocol.send(h11.EndOfMessage())
    except h11.LocalProtocolError as error:
        raise httpx.LocalProtocolError(str(error), request=request) from None
    try:
        async with asyncio.timeout(timeouts.get("write")):
            connection.writer.write(data)
            await connection.writer.drain()
    except TimeoutError:
        raise httpx.WriteTimeout("sending the request timed out", request=request) from None
    except OSError as error:
        raise httpx.WriteError(f"sending the request failed: {error}", request=request) from None
    return await _read_answer(connection, request, timeouts.get("read"))


async def _read_answer(connection: _Connection, request: httpx.Request, read_timeout: float | None) -> _Answer:
    protocol = connection.h11
    status, reason, headers = 0, b"", []
    chunks: list[bytes] = []
    while True:
        try:
            event: Any = protocol.next_event()
        except h11.RemoteProtocolError as error:
            raise httpx.RemoteProtocolError(str(error), request=request) from None
        if event is h11.NEED_DATA:
            try:
                async with asyncio.timeout(read_timeout):
                    data = await connection.reader.read(_READ_SIZE)
            except TimeoutError:
                raise httpx.ReadTimeout("waiting for the answer timed out", request=request) from None
            except OSError as error:
                raise httpx.ReadError(f"reading the answer failed: {error}", request=request) from None
            if not data and protocol.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError("the server closed the connection without answering", request=request)
            protocol.receive_data(data)
        elif isinstance(event, h11.Response):
            status, reason, headers = event.status_code, event.reason, list(event.headers)
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            reusable = protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
            return _Answer(status, reason, headers, b"".join(chunks), reusable)
        elif isinstance(event, h11.ConnectionClosed):
            raise httpx.RemoteProtocolError("the server closed the connection mid-answer", request=request)
        # h11.InformationalResponse (1xx): keep reading for the final answer.
