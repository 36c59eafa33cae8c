"""A lean HTTP/1.1 keep-alive transport for the SCIM client: an ``asyncio.Protocol`` with its own small request
writer and answer parser, one idle list per origin.

Why a transport of our own at all: profiling the client showed httpcore's connection pool costing most of the
client's CPU per request -- every request and every release walks all pooled connections and asks each idle one,
through anyio, whether its socket is readable (a system call), so the cost grows with the concurrency. This transport
keeps idle connections in a list, checks only the one it takes (flags set by ``eof_received``/``connection_lost``, no
system call), reads each answer whole (SCIM answers are small JSON documents) and gives the connection back at once.

Why no h11 and no asyncio streams any more: with that pool gone, a profile of the client at concurrency 16 against a
local server showed h11 costing about 10 % of the client's whole CPU per request (``normalize_and_validate`` of the
request and answer headers, ``_process_event``, ``next_event``, ``h11.Request.__init__``, one validation regex per
header), and ``StreamReader``/``StreamWriter`` plus one ``asyncio.timeout()`` context per read adding more on top.
A SCIM client sends one small request and reads one small answer at a time, so almost none of that generality is
needed. Here:

* the request is written as one ``bytes`` object in one ``transport.write()``; the headers are httpx's, as given, and
  a single C-level pass over the finished head refuses CR, LF or NUL smuggled into a header or the target;
* the answer is parsed from one ``bytearray`` that ``data_received`` appends to. A waiting reader names how many bytes
  it needs, so a body arriving in many TCP segments wakes it once, not once per segment. The header block is split
  and checked with a handful of C-level calls (``find``/``translate``/``split``), not a regex per header;
* the read timeout is one ``call_at`` timer per connection, not an ``asyncio.timeout()`` context per read. It is
  httpx's read timeout, "no byte for N seconds": the timer is left armed from one wait to the next and, when it fires,
  re-arms itself for whatever silence is left (bytes that arrived without waking the reader count as no silence), so
  answers that come within milliseconds do not create and cancel a timer each.

Measured on the 2-core development machine with bare ``httpx.AsyncClient`` requests to a local raw server (best of
four runs): about 290 us of client CPU per GET at concurrency 1 and 235 us at 16, against 460 us and 395 us with h11
and streams; in ``benchmarks/client_throughput.py`` (same client code, A/B) about 35-50 % less client CPU per SCIM
create or get at 0 ms latency.

It raises the same ``httpx`` exceptions as httpx's own transport (``ConnectError``/``ConnectTimeout`` before the
request left, ``WriteError``/``WriteTimeout`` while sending, ``ReadError``/``ReadTimeout``/``RemoteProtocolError``
after it may have), which the client's retry and adoption logic relies on; an answer that never began is
"the server closed the connection without answering". It speaks HTTP/1.1 only and knows no proxies: the client uses
httpx's own transport whenever a proxy is configured in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import cast

import httpx

__all__ = ["Http11Transport"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_HEAD = 65_536
"""Bytes of one header block (or trailer block) at most: a server that never ends its headers cannot grow the
buffer without bound."""
_MAX_CHUNK_LINE = 4_096
_NO_TIMEOUTS: Mapping[str, float | None] = {}

_BLANK_LINE = re.compile(rb"\n\r?\n")
"""The end of a header block. Bare LF line ends are accepted as RFC 9112 allows (and h11 did)."""
_IDENTITY = bytes(range(256))
"""``translate`` with an explicit identity table is markedly faster than with ``None``."""
_CR_LF_NUL = b"\r\n\x00"
_NOT_CR_LF_NUL = bytes(c for c in range(256) if c not in _CR_LF_NUL)
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FIELD_OK = bytes(c for c in range(256) if c >= 0x20 and c != 0x7F) + b"\t"
"""Bytes allowed in a status line or header line: no control characters except HTAB."""
_HEX = b"0123456789abcdefABCDEF"
_NO_BODY_STATUSES = frozenset({204, 304})

Origin = tuple[str, str, int]
Fields = list[tuple[bytes, bytes]]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the protocol object is the connection, its buffer holds what the server sent."""

    __slots__ = (
        "buffer",
        "closed",
        "drain_waiter",
        "eof",
        "error",
        "idle_since",
        "last_data",
        "loop",
        "lost",
        "need",
        "paused",
        "read_timeout",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.need = 1
        """Wake the waiter only once the buffer holds this many bytes (or the connection ends)."""
        self.read_timeout: float | None = None
        """The current wait's read timeout: at most this many seconds without a byte."""
        self.last_data = 0.0
        """``loop.time()`` when the current wait began or bytes last arrived during it."""
        self.timer: asyncio.TimerHandle | None = None
        """The read timer. It outlives the wait that armed it (see ``expect``)."""
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] | None = None
        self.idle_since = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TCP transports implement asyncio.Transport without subclassing it, and
        # a code location may run its assets on uvloop.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        waiter = self.waiter
        if waiter is not None:
            if len(buffer) >= self.need:
                self.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
            else:
                self.last_data = self.loop.time()

    def eof_received(self) -> None:
        # Returning None lets a plain TCP transport close itself; connection_lost follows.
        self.eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake()
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(exc or ConnectionResetError("the connection was lost"))
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- for the transport ------------------------------------------------------------------------------------------

    def is_usable(self, now: float, keepalive_expiry_s: float) -> bool:
        """Still open, not closed by the server while idle, sent nothing unasked, and not idle for too long."""
        return not (self.eof or self.lost or self.buffer) and now - self.idle_since < keepalive_expiry_s

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        if not self.lost:
            self.closed = self.loop.create_future()
            await self.closed

    def expect(self, need: int, read_timeout_s: float | None) -> asyncio.Future[None]:
        """A future done once the buffer holds ``need`` bytes or the connection ends, or failing with TimeoutError
        after ``read_timeout_s`` seconds without a byte. The caller checks ``eof``/``lost`` first.

        The read timer is not cancelled when the wait ends: a connection answering in milliseconds would otherwise
        create and cancel one timer per answer. It stays armed and, when it fires, finds no wait (and lapses) or
        re-arms itself for what is left of the current wait's timeout. Only a wait with a shorter deadline than the
        armed timer replaces it."""
        waiter = self.loop.create_future()
        self.waiter = waiter
        self.need = need
        self.read_timeout = read_timeout_s
        if read_timeout_s is not None:
            self.last_data = now = self.loop.time()
            deadline = now + read_timeout_s
            timer = self.timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self.timer = self.loop.call_at(deadline, self._read_timer_fired)
        return waiter

    async def drain(self, write_timeout_s: float | None) -> None:
        """Until the transport wants more data (after ``pause_writing``); raises what ended the connection."""
        self.drain_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(write_timeout_s):  # once per large body only
                await self.drain_waiter
        finally:
            self.drain_waiter = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _read_timer_fired(self) -> None:
        self.timer = None
        waiter = self.waiter
        read_timeout = self.read_timeout
        if waiter is None or waiter.done() or read_timeout is None:
            return  # no wait with a timeout now; the next one arms a new timer
        # Bytes that did not complete what the reader needs do not wake it, but they do count as "not silent".
        remaining = read_timeout - (self.loop.time() - self.last_data)
        if remaining > 0.001:
            self.timer = self.loop.call_later(remaining, self._read_timer_fired)
        else:
            self.waiter = None
            waiter.set_exception(TimeoutError())


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
        # A counter and a queue of waiters rather than an asyncio.Semaphore: taking a free slot is then one integer
        # decrement, with no coroutine call.
        self._free_slots = max_connections
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._keepalive_expiry_s = keepalive_expiry_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"Http11Transport(idle={sum(len(d) for d in self._idle.values())}, busy={len(self._busy)})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin: Origin = (scheme, url.host, url.port or default_port)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", _NO_TIMEOUTS)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        data, keep_alive = _serialize(request, body)  # refuses header injection before anything is opened
        if self._free_slots > 0:
            self._free_slots -= 1
        else:
            await self._wait_for_slot(request, timeouts.get("pool"))
        try:
            connection = self._take_idle(origin)
            if connection is None:
                connection = await self._connect(request, origin, timeouts.get("connect"))
            self._busy.add(connection)
            try:
                _write(connection, request, data)
                if connection.paused:  # only a body larger than the transport's buffer limit gets here
                    await _drain(connection, request, timeouts.get("write"))
                try:
                    status, http_10, reason, headers, content, reusable = await _read_answer(
                        connection, request, timeouts.get("read")
                    )
                except TimeoutError:  # from _Connection.expect; TimeoutError is an OSError, nothing else raises one
                    raise httpx.ReadTimeout("waiting for the answer timed out", request=request) from None
            except BaseException:
                connection.close()
                raise
            finally:
                self._busy.discard(connection)
            if reusable and keep_alive:
                connection.idle_since = time.monotonic()
                idle = self._idle.get(origin)
                if idle is None:
                    idle = self._idle[origin] = deque()
                idle.append(connection)
            else:
                connection.close()
        finally:
            self._release_slot()
        # stream=, not content=: Response(content=...) would encode the body again and add a Content-Length header
        # the server did not send (to chunked answers), for about 9 us per answer. httpx reads (and decodes) it next.
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.0" if http_10 else b"HTTP/1.1", "reason_phrase": reason},
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
                await connection.wait_closed()

    async def _wait_for_slot(self, request: httpx.Request, pool_timeout: float | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout(pool_timeout):
                await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise httpx.PoolTimeout("no connection became free in time", request=request) from None
            raise

    def _release_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the longest waiting request
                return
        self._free_slots += 1

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
        loop = asyncio.get_running_loop()
        connection = _Connection(loop)
        try:
            async with asyncio.timeout(connect_timeout_s):
                await loop.create_connection(
                    lambda: connection, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            connection.close()
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except OSError as error:  # ssl.SSLError is an OSError too
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}", request=request) from None
        return connection


# -- the request -----------------------------------------------------------------------------------------------------


def _serialize(request: httpx.Request, body: bytes) -> tuple[bytes, bool]:
    """The request as one bytes object, and whether it lets the connection be kept (no ``Connection: close``)."""
    raw = request.headers.raw
    try:
        method = request.method.encode("ascii")
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError(f"illegal method {request.method!r}", request=request) from None
    target = request.url.raw_path
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # One pass over the whole head: we put exactly two CR LF pairs more than there are headers in it, so any more CR,
    # LF or NUL came from a header name or value or the target -- an injection or a mistake. (h11 ran a regex per
    # header to the same end.)
    if len(head.translate(_IDENTITY, _NOT_CR_LF_NUL)) != 2 * len(raw) + 4 or b" " in target or not method:
        raise httpx.LocalProtocolError("CR, LF or NUL in a request header or the target", request=request)
    for name, _ in raw:
        if not name or name.translate(_IDENTITY, _TOKEN):
            raise httpx.LocalProtocolError(f"illegal header name {name!r}", request=request)
    keep_alive = b"close" not in head.lower() or not _has_token(raw, b"connection", b"close")
    return (head + body if body else head), keep_alive


def _has_token(fields: Fields, lower_name: bytes, token: bytes) -> bool:
    for name, value in fields:
        if name.lower() == lower_name and token in (part.strip() for part in value.lower().split(b",")):
            return True
    return False


def _write(connection: _Connection, request: httpx.Request, data: bytes) -> None:
    transport = connection.transport
    if transport is None or connection.lost or transport.is_closing():
        raise httpx.WriteError("the connection was closed before the request could be sent", request=request)
    transport.write(data)  # sends at once as far as the socket takes it; buffers and pauses us beyond that
    if transport.is_closing():  # the send failed: asyncio closes the transport and reports it later
        raise httpx.WriteError("sending the request failed: the connection was lost", request=request)


async def _drain(connection: _Connection, request: httpx.Request, write_timeout: float | None) -> None:
    try:
        await connection.drain(write_timeout)
    except TimeoutError:
        raise httpx.WriteTimeout("sending the request timed out", request=request) from None
    except OSError as error:
        raise httpx.WriteError(f"sending the request failed: {error}", request=request) from None


# -- the answer ------------------------------------------------------------------------------------------------------

Answer = tuple[int, bool, bytes, Fields, bytes, bool]
"""Status, HTTP/1.0 or not, reason phrase, raw headers, body, whether the connection may be reused."""


async def _read_answer(connection: _Connection, request: httpx.Request, read_timeout: float | None) -> Answer:
    buffer = connection.buffer
    start = scan = 0
    while True:  # one round per interim (1xx) answer
        match = _BLANK_LINE.search(buffer, scan)
        if match is None:
            if len(buffer) - start > _MAX_HEAD:
                raise httpx.RemoteProtocolError("the answer's header block is too large", request=request)
            scan = max(start, len(buffer) - 2)  # a blank line may straddle the old end
            await _expect(connection, request, len(buffer) + 1, read_timeout)
            continue
        head_end, body_start = match.span()
        if head_end - start > _MAX_HEAD:
            raise httpx.RemoteProtocolError("the answer's header block is too large", request=request)
        status, http_10, reason, headers, length, chunked, connection_tokens = _parse_head(
            bytes(buffer[start:head_end]), request
        )
        if status >= 200:
            break
        if status == 101:
            raise httpx.RemoteProtocolError(
                "the server switched protocols (101), which this client never asks for", request=request
            )
        start = scan = body_start  # 100 Continue, 102, 103: no body; the real answer follows

    if http_10:
        reusable = b"keep-alive" in connection_tokens and b"close" not in connection_tokens
    else:
        reusable = b"close" not in connection_tokens
    if status in _NO_BODY_STATUSES or request.method == "HEAD":
        content, end = b"", body_start
    elif chunked:
        content, end = await _read_chunked(connection, request, body_start, read_timeout)
    elif length is not None:
        end = body_start + length
        while len(buffer) < end:
            await _expect(connection, request, end, read_timeout)
        content = bytes(buffer[body_start:end])
    else:  # neither length nor chunked: the body ends when the server closes the connection
        while not (connection.eof or connection.lost):
            await connection.expect(sys.maxsize, read_timeout)
        if connection.error is not None:
            raise httpx.ReadError(f"reading the answer failed: {connection.error}", request=request)
        content, end, reusable = bytes(buffer[body_start:]), len(buffer), False
    if end != len(buffer) or connection.eof or connection.lost:
        reusable = False  # bytes nobody asked for, or the server is leaving: start afresh next time
    else:
        buffer.clear()
    return status, http_10, reason, headers, content, reusable


def _expect(
    connection: _Connection, request: httpx.Request, need: int, read_timeout: float | None
) -> asyncio.Future[None]:
    """Wait for the buffer to hold ``need`` bytes, or raise what the end of the connection means."""
    if connection.eof or connection.lost:
        if connection.error is not None:
            raise httpx.ReadError(f"reading the answer failed: {connection.error}", request=request)
        if not connection.buffer:  # the client's adoption logic treats this as "answer lost"
            raise httpx.RemoteProtocolError("the server closed the connection without answering", request=request)
        raise httpx.RemoteProtocolError("the server closed the connection mid-answer", request=request)
    return connection.expect(need, read_timeout)


async def _read_chunked(
    connection: _Connection, request: httpx.Request, position: int, read_timeout: float | None
) -> tuple[bytes, int]:
    """The body of a chunked answer starting at ``position``, and where the answer ends (after any trailers)."""
    buffer = connection.buffer
    spans: list[tuple[int, int]] = []
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            if len(buffer) - position > _MAX_CHUNK_LINE:
                raise httpx.RemoteProtocolError("a chunk header line is too long", request=request)
            await _expect(connection, request, len(buffer) + 1, read_timeout)
            continue
        size = _chunk_size(bytes(buffer[position:line_end]), request)
        if size == 0:
            break
        data_start = line_end + 2
        data_end = data_start + size
        while len(buffer) < data_end + 2:  # the chunk and its CR LF, in one wake-up however many segments it takes
            await _expect(connection, request, data_end + 2, read_timeout)
        if buffer[data_end : data_end + 2] != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk does not end with CR LF", request=request)
        spans.append((data_start, data_end))
        position = data_end + 2
    # The last chunk, then trailer fields, then CR LF.
    while (trailers_end := buffer.find(b"\r\n\r\n", line_end)) < 0:
        if len(buffer) - line_end > _MAX_HEAD:
            raise httpx.RemoteProtocolError("the answer's trailer block is too large", request=request)
        await _expect(connection, request, len(buffer) + 1, read_timeout)
    if trailers_end > line_end:
        _check_trailers(bytes(buffer[line_end + 2 : trailers_end]), request)
    with memoryview(buffer) as view:
        content = b"".join([view[a:b] for a, b in spans])
    return content, trailers_end + 4


def _chunk_size(line: bytes, request: httpx.Request) -> int:
    size = line.split(b";", 1)[0].rstrip(b" \t")  # chunk extensions are allowed and ignored
    if not 0 < len(size) <= 16 or size.translate(_IDENTITY, _HEX):
        raise httpx.RemoteProtocolError(f"illegal chunk header {line[:40]!r}", request=request)
    return int(size, 16)


def _parse_head(head: bytes, request: httpx.Request) -> tuple[int, bool, bytes, Fields, int | None, bool, set[bytes]]:
    """Status, HTTP/1.0 or not, reason, raw headers, Content-Length, chunked or not, the Connection tokens."""
    lines = _split_lines(head, request)
    status_line = lines[0]
    # HTTP/1.x SP 3DIGIT [SP reason]; servers that leave out the reason phrase exist.
    if (
        len(status_line) < 12
        or status_line[:7] != b"HTTP/1."
        or not status_line[7:8].isdigit()
        or status_line[8] != 0x20
        or not status_line[9:12].isdigit()
        or (len(status_line) > 12 and status_line[12] != 0x20)
    ):
        raise httpx.RemoteProtocolError(f"malformed status line {status_line[:80]!r}", request=request)
    status = int(status_line[9:12])
    if status < 100:
        raise httpx.RemoteProtocolError(f"status code {status} out of range", request=request)

    headers: Fields = []
    length: int | None = None
    length_text: bytes | None = None
    chunked = False
    connection_tokens: set[bytes] = set()
    for index in range(1, len(lines)):
        line = lines[index]
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(_IDENTITY, _TOKEN):
            raise _malformed_field(line, request)
        value = value.strip(b" \t")
        headers.append((name, value))
        if len(name) not in (10, 14, 17):  # connection, content-length, transfer-encoding: skip the rest cheaply
            continue
        lower = name.lower()
        if lower == b"content-length":
            # Several identical values (in one field or repeated fields) are allowed; differing ones are not.
            for item in value.split(b",") if b"," in value else (value,):
                text = item.strip(b" \t")
                if length_text is None:
                    if not text.isdigit():
                        raise httpx.RemoteProtocolError(f"malformed Content-Length {value[:40]!r}", request=request)
                    length_text, length = text, int(text)
                elif text != length_text:
                    raise httpx.RemoteProtocolError("differing Content-Length values", request=request)
        elif lower == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}", request=request)
            chunked = True
        elif lower == b"connection":
            connection_tokens.update(token.strip(b" \t") for token in value.lower().split(b","))
    return status, status_line[7] == 0x30, status_line[13:], headers, length, chunked, connection_tokens


def _split_lines(block: bytes, request: httpx.Request) -> list[bytes]:
    """A header (or trailer) block, without its blank line, as lines; refuses control characters in it."""
    if block.endswith(b"\r"):
        block = block[:-1]  # the CR of the last line's CR LF (the blank line's search stops at its LF)
    # Once every byte that may stand in a line is removed, only the CR LF line ends should be left: two C-level passes
    # check the whole block for control characters, bare CR and bare LF.
    rest = block.translate(_IDENTITY, _FIELD_OK)
    if len(rest) == 2 * block.count(b"\r\n"):
        return block.split(b"\r\n")
    if rest.translate(_IDENTITY, b"\r\n"):
        raise httpx.RemoteProtocolError("a control character in the answer's header block", request=request)
    lines = [line[:-1] if line.endswith(b"\r") else line for line in block.split(b"\n")]  # bare LF line ends
    if any(b"\r" in line for line in lines):
        raise httpx.RemoteProtocolError("a bare CR in the answer's header block", request=request)
    return lines


def _check_trailers(block: bytes, request: httpx.Request) -> None:
    """Trailer fields are checked like headers, then dropped: httpx has no place for them."""
    for line in _split_lines(block, request):
        name, colon, _ = line.partition(b":")
        if not colon or not name or name.translate(_IDENTITY, _TOKEN):
            raise _malformed_field(line, request)


def _malformed_field(line: bytes, request: httpx.Request) -> httpx.RemoteProtocolError:
    if line[:1] in (b" ", b"\t"):
        return httpx.RemoteProtocolError("obsolete line folding in the answer's headers", request=request)
    return httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}", request=request)
