"""One HTTP exchange under an overall deadline and a size cap, on a stock ``httpx.AsyncClient``.

httpx's own timeouts bound each network operation (a connect, one read), so a server trickling its headers or body
a byte at a time never trips them. Here one ``asyncio.timeout`` covers the connect, the send and reading the whole
answer, and the answer is streamed so that its size is counted as it arrives — after decompression, since
``aiter_bytes`` yields decoded bytes — and refused as soon as it passes the cap (or at once when its
``Content-Length`` already does).
"""

from __future__ import annotations

import asyncio

import httpx

__all__ = ["AnswerTooLarge", "send_bounded"]

_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
"""What no longer describes the answer once its body is held decoded."""


class AnswerTooLarge(Exception):
    """The answer's body (decoded) exceeds the cap; carries its status for the error message."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"HTTP {status} answer larger than {limit} bytes")
        self.status = status
        self.limit = limit


async def send_bounded(
    http: httpx.AsyncClient, request: httpx.Request, *, deadline_s: float, max_bytes: int
) -> httpx.Response:
    """Send ``request`` and return its answer read whole and decoded, within ``deadline_s`` and ``max_bytes``.

    Raises ``httpx.ReadTimeout`` when the deadline passes (whatever stage it was at: the request may have reached
    the server), :class:`AnswerTooLarge` for an answer over the cap, and httpx's transport errors as they come.
    Redirects are never followed (the caller decides what a 3xx means)."""
    try:
        async with asyncio.timeout(deadline_s):
            response = await http.send(request, stream=True, follow_redirects=False)
            try:
                body = await _read_capped(response, max_bytes)
            finally:
                await response.aclose()
    except TimeoutError:
        raise httpx.ReadTimeout(f"no complete answer within {deadline_s:g} s", request=request) from None
    return httpx.Response(
        response.status_code,
        headers=[(name, value) for name, value in response.headers.multi_items() if name not in _FRAMING_HEADERS],
        content=body,
        request=request,
        extensions={"http_version": response.extensions.get("http_version", b"HTTP/1.1")},
    )


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        # A compressed body only grows when decoded, so its declared length is already too much.
        raise AnswerTooLarge(response.status_code, max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(response.status_code, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)
