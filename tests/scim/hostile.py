"""Small misbehaving HTTP servers on 127.0.0.1 for the hostile-server tests: raw asyncio streams, so a test can
trickle bytes, lie about sizes, redirect or echo credentials exactly as a hostile or broken server would.

A test gives a handler ``async (request, writer) -> None`` that writes whatever bytes it likes; ``answer`` writes an
ordinary HTTP/1.1 answer. The server runs its own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN_PATH = "/oauth2/token"
CLIENT_ID = "hostile-client"
CLIENT_SECRET = "Hostile-s3cret-e91f0c27"  # asserted absent from every message, log and repr


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(urlsplit(self.target).query).items()}

    def form(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(self.body.decode()).items()}


Handler = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


async def answer(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes | dict[str, Any] = b"",
    *,
    reason: str = "OK",
    headers: dict[str, str] | None = None,
) -> None:
    """Write an HTTP/1.1 answer with a Content-Length (JSON when ``body`` is a dict)."""
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(payload)}"]
    if isinstance(body, dict):
        lines.append("Content-Type: application/scim+json")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
    await writer.drain()


@dataclass
class HostileServer:
    """``with HostileServer(handler) as server:`` a server on 127.0.0.1 whose SCIM answers ``handler`` writes.

    The token endpoint issues a fresh random bearer token per request (``tokens``) unless ``token_handler`` says
    otherwise."""

    handler: Handler
    token_handler: Handler | None = None
    requests: list[RawRequest] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def __enter__(self) -> HostileServer:
        started = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            await self._stop.wait()
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the hostile server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/scim/v2"

    @property
    def token_url(self) -> str:
        return f"{self.origin}{TOKEN_PATH}"

    def scim_requests(self) -> list[RawRequest]:
        return [request for request in self.requests if request.path != TOKEN_PATH]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if request.path == TOKEN_PATH:
                    await (self.token_handler or self._issue_token)(request, writer)
                else:
                    await self.handler(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _issue_token(self, request: RawRequest, writer: asyncio.StreamWriter) -> None:
        token = secrets.token_urlsafe(32)
        self.tokens.append(token)
        await answer(writer, 200, {"access_token": token, "token_type": "bearer", "expires_in": 3600})


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawRequest(method, target, headers, body)
