"""The transport's answer parser, over real loopback sockets: framing, interim answers, malformed answers, answers
split at every byte, and a differential test against h11 (which httpx installs; the transport itself no longer uses
it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import string
from dataclasses import dataclass

import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scim_pipeline.scim._transport import Http11Transport, _Connection

from .test_transport import Handler, client, raw_server, read_request

# -- helpers -----------------------------------------------------------------------------------------------------------


async def write_pieces(writer: asyncio.StreamWriter, pieces: list[bytes]) -> None:
    """Each piece in its own TCP segment as far as loopback allows: the client's loop runs between them."""
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def serving(*answers: bytes | list[bytes], close_after: bool = False) -> Handler:
    """Answer the requests on a connection with ``answers`` in turn (a list is written piece by piece), then close
    the connection if ``close_after``, else keep it open until the client leaves."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for item in answers:
            await read_request(reader)
            await write_pieces(writer, item if isinstance(item, list) else [item])
        if not close_after:
            await reader.read()  # until the client closes

    return handler


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the transport's protocol got bytes: proof that an answer really arrived in pieces."""
    calls = [0]
    data_received = _Connection.data_received

    def counting(self: _Connection, data: bytes) -> None:
        calls[0] += 1
        data_received(self, data)

    monkeypatch.setattr(_Connection, "data_received", counting)
    return calls


def answer_of(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


# -- framing -----------------------------------------------------------------------------------------------------------


async def test_chunked_with_extensions_trailers_and_any_hex_case_split_byte_by_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b'{"id": "1", "userName": "' + b"x" * 40 + b'"}'
    chunks = (
        b"5;name=value\r\n" + body[:5] + b"\r\n"
        + b"1A ; quoted=\"a;b\"\r\n" + body[5:31] + b"\r\n"
        + b"%x\r\n" % len(body[31:]) + body[31:] + b"\r\n"
        + b"0;last\r\nX-Checksum: abc\r\nX-Other:  def \r\n\r\n"
    )  # fmt: skip
    reads = count_reads(monkeypatch)
    handler = serving(byte_by_byte(CHUNKED_HEAD + chunks), answer_of(b"after"))
    async with raw_server(handler) as server, client() as http:
        response = await http.get(f"{server.url}/x")
        assert response.content == body
        assert response.json()["userName"] == "x" * 40
        assert (await http.get(f"{server.url}/x")).content == b"after"  # the trailers were consumed to the end
    assert reads[0] > 20
    assert server.connections == 1


async def test_chunked_in_upper_case_hex_and_a_zero_chunk_right_after_the_head() -> None:
    payload = bytes(range(256)) * 2
    chunked = b"%X\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n"
    async with raw_server(serving(CHUNKED_HEAD + chunked, CHUNKED_HEAD + b"0\r\n\r\n")) as server, client() as http:
        assert (await http.get(f"{server.url}/x")).content == payload
        assert (await http.get(f"{server.url}/x")).content == b""
    assert server.connections == 1


async def test_chunked_wins_over_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with raw_server(serving(head + b"6\r\nabcdef\r\n0\r\n\r\n")) as server, client() as http:
        assert (await http.get(f"{server.url}/x")).content == b"abcdef"


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"2\r\nabc\r\n0\r\n\r\n",  # the chunk is longer than announced
        b"2\r\nabXY1\r\nc\r\n0\r\n\r\n",  # no CR LF after a chunk, and what follows would parse
        b"\r\nab\r\n0\r\n\r\n",  # no size at all
        b" 2\r\nab\r\n0\r\n\r\n",  # leading whitespace
        b"2\r\nab\r\n0\r\nno colon\r\n\r\n",  # malformed trailer
    ],
)
async def test_a_malformed_chunked_body_is_a_remote_protocol_error(chunks: bytes) -> None:
    async with raw_server(serving(CHUNKED_HEAD + chunks)) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{server.url}/x")


async def test_content_length_body_split_byte_by_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"Resources": [' + b", ".join(b'{"id": "%d"}' % i for i in range(20)) + b"]}"
    reads = count_reads(monkeypatch)
    async with raw_server(serving(byte_by_byte(answer_of(body)), answer_of(b"{}"))) as server, client() as http:
        response = await http.get(f"{server.url}/x")
        assert response.content == body
        assert (await http.get(f"{server.url}/x")).content == b"{}"
    assert reads[0] > 20  # loopback coalesces some of the writes, not most
    assert server.connections == 1


async def test_a_body_delimited_by_close_is_read_to_the_end_and_the_connection_not_reused() -> None:
    body = b"read me until the server hangs up"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    async with raw_server(serving([head, body[:10], body[10:]], close_after=True)) as server, client() as http:
        for _ in range(2):
            response = await http.get(f"{server.url}/x")
            assert response.content == body
    assert server.connections == 2


@pytest.mark.parametrize(
    ("status", "method"), [(b"204 No Content", "GET"), (b"304 Not Modified", "GET"), (b"200 OK", "HEAD")]
)
async def test_answers_without_a_body_even_if_they_announce_one(status: bytes, method: str) -> None:
    head = b"HTTP/1.1 " + status + b'\r\nContent-Length: 12\r\nETag: W/"1"\r\n\r\n'
    async with raw_server(serving(head, answer_of(b"second"))) as server, client() as http:
        first = await http.request(method, f"{server.url}/x")
        assert first.content == b""
        assert first.headers["content-length"] == "12"
        assert (await http.get(f"{server.url}/x")).content == b"second"
    assert server.connections == 1


async def test_several_identical_content_lengths_are_fine() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"
    async with raw_server(serving(head + b"abc")) as server, client() as http:
        assert (await http.get(f"{server.url}/x")).content == b"abc"


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\nContent-Length: 4\r\n",
        b"Content-Length: 3, 4\r\n",
        b"Content-Length: 3a\r\n",
        b"Content-Length: -3\r\n",
        b"Content-Length:\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ],
)
async def test_bad_framing_headers_are_a_remote_protocol_error(fields: bytes) -> None:
    async with raw_server(serving(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nabcd")) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{server.url}/x")


# -- interim answers, versions, headers -----------------------------------------------------------------------------


async def test_interim_answers_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    async with raw_server(serving([interim, answer_of(b"final")])) as server, client() as http:
        response = await http.post(f"{server.url}/x", json={"a": 1})
    assert response.status_code == 200
    assert response.content == b"final"
    assert "link" not in response.headers


async def test_switching_protocols_is_a_remote_protocol_error() -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with raw_server(serving(answer)) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="101"):
            await http.get(f"{server.url}/x")


async def test_raw_header_names_and_values_are_kept_and_whitespace_around_values_dropped() -> None:
    answer = (
        b"HTTP/1.1 201 Created\r\nX-Mixed-Case:\t a  b \t\r\nlocation:/scim/v2/Users/1\r\nX-Empty:\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\n{}"
    )
    async with raw_server(serving(answer)) as server, client() as http:
        response = await http.get(f"{server.url}/x")
    assert response.status_code == 201
    assert response.headers.raw == [
        (b"X-Mixed-Case", b"a  b"),
        (b"location", b"/scim/v2/Users/1"),
        (b"X-Empty", b""),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"2"),
    ]
    assert response.headers["x-mixed-case"] == "a  b"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.reason_phrase == "Created"
    assert response.http_version == "HTTP/1.1"


@pytest.mark.parametrize(
    ("status_line", "reason"), [(b"HTTP/1.1 200", ""), (b"HTTP/1.1 200 ", ""), (b"HTTP/1.1 299 A b", "A b")]
)
async def test_the_reason_phrase_may_be_empty_or_missing(status_line: bytes, reason: str) -> None:
    async with raw_server(serving(status_line + b"\r\nContent-Length: 0\r\n\r\n")) as server, client() as http:
        response = await http.get(f"{server.url}/x")
    assert response.status_code == int(status_line[9:12])
    assert response.reason_phrase == reason


async def test_bare_lf_line_ends_are_accepted() -> None:
    async with raw_server(serving(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok")) as server, client() as http:
        response = await http.get(f"{server.url}/x")
    assert response.content == b"ok"
    assert response.headers["x-a"] == "b"


async def test_http_10_is_reused_only_when_it_says_keep_alive() -> None:
    plain = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    kept = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(serving(plain)) as server, client() as http:
        for _ in range(2):
            response = await http.get(f"{server.url}/x")
            assert response.http_version == "HTTP/1.0"
    assert server.connections == 2
    async with raw_server(serving(kept, kept)) as server, client() as http:
        for _ in range(2):
            assert (await http.get(f"{server.url}/x")).content == b"ok"
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  folded\r\nContent-Length: 0\r\n\r\n",  # obsolete line folding
        b"HTTP/1.1 200 OK\r\n\tfolded-first: a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Space : a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: no name\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n",
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    ],
)
async def test_a_malformed_head_is_a_remote_protocol_error(answer: bytes) -> None:
    async with raw_server(serving(answer)) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{server.url}/x")


async def test_a_header_block_too_large_is_a_remote_protocol_error() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(700))

    async def endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await write_pieces(writer, [big[i : i + 4096] for i in range(0, len(big), 4096)])
        await asyncio.sleep(5.0)  # the blank line never comes: the client must give up on size, not on time

    async with raw_server(endless_head) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="too large"):
            await http.get(f"{server.url}/x")
    async with raw_server(serving(big + b"Content-Length: 0\r\n\r\n")) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="too large"):
            await http.get(f"{server.url}/x")


# -- the server going away ---------------------------------------------------------------------------------------------


async def test_a_server_closing_before_any_byte_means_no_answer() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(hang_up) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="closed the connection without answering"):
            await http.get(f"{server.url}/x")


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        CHUNKED_HEAD + b"a\r\n01234",
        CHUNKED_HEAD + b"5\r\n01234\r\n",
        CHUNKED_HEAD + b"0\r\nX-Trailer: a\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
async def test_a_server_closing_mid_answer_is_a_remote_protocol_error(cut: bytes) -> None:
    async with raw_server(serving(cut, close_after=True)) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
            await http.get(f"{server.url}/x")


async def test_bytes_after_a_complete_answer_keep_the_connection_from_reuse() -> None:
    garbage = answer_of(b"one") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
    async with raw_server(serving(garbage, answer_of(b"nope"))) as server, client() as http:
        assert (await http.get(f"{server.url}/x")).content == b"one"
        assert (await http.get(f"{server.url}/x")).content == b"one"  # a fresh connection, answered afresh
    assert server.connections == 2


async def test_connection_close_in_the_answer_is_honoured_even_if_the_server_stays() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(serving(closing)) as server, client() as http:
        for _ in range(3):
            assert (await http.get(f"{server.url}/x")).content == b"ok"
    assert server.connections == 3


# -- differential: the same bytes through h11 ----------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
FRAMING_NAMES = {"content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Generated:
    method: str
    wire: bytes
    close_after: bool
    """The server hangs up after the answer (only when the body is delimited by the close)."""
    splits: list[int]


def random_case(draw: st.DrawFn, name: str) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True)).encode()


field_names = st.text(TOKEN, min_size=1, max_size=16).filter(lambda n: n.lower() not in FRAMING_NAMES)
value_chars = st.sampled_from([chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0x80, 0x100)] + [" ", "\t"])
field_values = st.text(value_chars, max_size=24).map(lambda v: v.strip(" \t").encode("latin-1"))
padding = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"])


@st.composite
def fields(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for name, value in draw(st.lists(st.tuples(field_names, field_values), max_size=6)):
        before, after = draw(padding), draw(padding)
        lines.append(name.encode() + b":" + before + value + after + b"\r\n")
    return lines


@st.composite
def answers(draw: st.DrawFn) -> Generated:
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD"]))
    interim = b""
    for status in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)):
        interim += b"HTTP/1.1 %d Interim\r\n" % status + b"".join(draw(fields())) + b"\r\n"
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 409, 500]) | st.integers(200, 599))
    reason = draw(st.text(string.ascii_letters + string.digits + " ", max_size=20))
    status_line = b"HTTP/1.1 %d" % status + (b" " + reason.encode() if reason or draw(st.booleans()) else b"")
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    body = draw(st.binary(max_size=3000))
    no_body = method == "HEAD" or status in (204, 304)
    headers = draw(fields())
    framing_line = b""
    if framing == "length":
        framing_line = random_case(draw, "Content-Length") + b":" + draw(padding) + b"%d" % len(body) + b"\r\n"
    elif framing == "chunked":
        framing_line = random_case(draw, "Transfer-Encoding") + b": chunked\r\n"
    if draw(st.booleans()):
        framing_line += random_case(draw, "Connection") + b": close\r\n"
    headers.insert(draw(st.integers(0, len(headers))), framing_line)
    head = interim + status_line + b"\r\n" + b"".join(headers) + b"\r\n"
    if no_body:
        payload = b""
    elif framing == "chunked":
        payload = b""
        rest = body
        while rest:
            size = draw(st.integers(1, len(rest)))
            hex_size = (b"%x" if draw(st.booleans()) else b"%X") % size
            extension = draw(st.sampled_from([b"", b";a", b";a=b", b';name="v;v"']))
            payload += hex_size + extension + b"\r\n" + rest[:size] + b"\r\n"
            rest = rest[size:]
        payload += b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n" + b"".join(draw(fields())) + b"\r\n"
    else:
        payload = body
    wire = head + payload
    splits = sorted(set(draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=8))))
    return Generated(method, wire, framing == "close" and not no_body, splits)


@dataclass
class Parsed:
    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reusable: bool


def parse_with_h11(method: str, wire: bytes, closed: bool) -> Parsed:
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method=method, target="/", headers=[("Host", "127.0.0.1")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(wire)
    if closed:
        connection.receive_data(b"")
    response: h11.Response | None = None
    body = b""
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        elif not isinstance(event, h11.InformationalResponse):
            raise AssertionError(f"h11 did not finish: {event!r}")
    assert response is not None
    return Parsed(
        response.status_code,
        response.reason,
        b"HTTP/" + response.http_version,
        list(response.headers.raw_items()),
        body,
        connection.their_state is h11.DONE and not closed,  # h11 lets a close-delimited answer end in DONE
    )


async def parse_with_transport(method: str, pieces: list[bytes], close_after: bool) -> Parsed:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await write_pieces(writer, pieces)
        if not close_after:
            await reader.read()

    async with raw_server(handler) as server:
        transport = Http11Transport()
        try:
            request = httpx.Request(method, f"{server.url}/", extensions={"timeout": {"read": 5.0}})
            async with asyncio.timeout(10):
                response = await transport.handle_async_request(request)
            reusable = any(transport._idle.values())
            raw = response.headers.raw
            body = await response.aread()
            return Parsed(
                response.status_code,
                response.extensions["reason_phrase"],
                response.extensions["http_version"],
                raw,
                body,
                reusable,
            )
        finally:
            await transport.aclose()
            for _ in range(100):  # let the handler see the client leave, rather than be cancelled at the end
                if not server.open_now:
                    break
                await asyncio.sleep(0.01)


def cut(wire: bytes, splits: list[int]) -> list[bytes]:
    bounds = [0, *splits, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_valid_answers_parse_as_h11_parses_them(generated: Generated) -> None:
    expected = parse_with_h11(generated.method, generated.wire, generated.close_after)
    pieces = cut(generated.wire, generated.splits)
    got = asyncio.run(parse_with_transport(generated.method, pieces, generated.close_after))
    assert got == expected


mutations = st.lists(
    st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.floats(0, 1), st.binary(min_size=1, max_size=3)),
    min_size=1,
    max_size=3,
)


def mutate(wire: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    data = bytearray(wire)
    for kind, where, new in edits:
        at = int(where * len(data))
        if kind == "delete":
            del data[at : at + len(new)]
        elif kind == "insert":
            data[at:at] = new
        else:
            data[at : at + len(new)] = new
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers(), mutations)
def test_damaged_answers_are_refused_cleanly_or_parsed_as_h11_parses_them(
    generated: Generated, edits: list[tuple[str, float, bytes]]
) -> None:
    """Served and then hung up on: the transport returns an answer or raises RemoteProtocolError -- nothing else,
    and never hangs -- and when both it and h11 accept the bytes, they agree on what they say."""
    wire = mutate(generated.wire, edits)
    try:
        got: Parsed | None = asyncio.run(parse_with_transport(generated.method, cut(wire, generated.splits), True))
    except httpx.RemoteProtocolError:
        got = None
    expected: Parsed | None = None
    with contextlib.suppress(h11.RemoteProtocolError, AssertionError):
        expected = parse_with_h11(generated.method, wire, True)
    if got is not None and expected is not None:
        assert (got.status, got.reason, got.headers, got.body) == (
            expected.status,
            expected.reason,
            expected.headers,
            expected.body,
        )
