"""Secrets stay secret: after demo, sync, check, a refused token request and failing runs, neither the client secret
nor any bearer token the target issued appears in anything the project or Dagster wrote. TLS is verified by default
and plain http is refused for a host that is not loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import threading
import traceback
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scim_pipeline.cli import main
from scim_pipeline.emulator import Emulator, EmulatorConfig, EmulatorServer
from scim_pipeline.resources.target import target_resource
from scim_pipeline.scim import (
    AuthenticationError,
    ConfigurationError,
    ConnectionSettings,
    ScimClient,
    ScimPipelineError,
    ScimTransportError,
)
from scim_pipeline.settings import PipelineSettings

from ..self_signed import self_signed_certificate
from .conftest import person, run_cli, write_roster

CLIENT_ID = "secrets-e2e"
CANARY = "s3cr3t-CANARY-7f3a9"
WRONG_CANARY = "wr0ng-CANARY-b81e2"


def needles_for(secrets: Sequence[str], tokens: Sequence[str]) -> list[str]:
    """What must never be written: each secret (also inside a Basic header), each token."""
    basics = [base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode() for secret in secrets]
    return [*secrets, *basics, *tokens]


def _parquet_text(path: Path) -> str:
    # Parquet pages are compressed: search the decoded values, not the bytes.
    table = pq.read_table(path)
    return json.dumps(table.to_pylist(), default=str) + str(table.schema)


def leaks(paths: Iterable[Path], needles: Sequence[str], *, exclude: Iterable[Path] = ()) -> list[str]:
    """``file: needle`` for every needle found in the files under ``paths`` (raw bytes; Parquet decoded)."""
    excluded = {path.resolve() for path in exclude}
    found: list[str] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            if file.resolve() in excluded:
                continue
            data = file.read_bytes()
            haystacks = [data]
            if file.suffix == ".parquet":
                haystacks.append(_parquet_text(file).encode())
            found += [f"{file}: {needle[:6]}…" for needle in needles if any(needle.encode() in h for h in haystacks)]
    return found


def leaks_in_text(where: str, text: str, needles: Sequence[str]) -> list[str]:
    return [f"{where}: {needle[:6]}…" for needle in needles if needle in text]


def exception_text(error: BaseException) -> str:
    """Everything an exception can show: message, repr, args, attributes, its chain and its traceback."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        current = current.__cause__ or current.__context__
    parts.append("".join(traceback.format_exception(error)))
    return "\n".join(parts)


@pytest.fixture
def issued_tokens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every bearer token any emulator in this process issues (the demo's embedded one included)."""
    tokens: list[str] = []
    original = Emulator.issue_token

    def recording(self: Emulator, client_id: str) -> tuple[str, float]:
        token, expires_at = original(self, client_id)
        tokens.append(token)
        return token, expires_at

    monkeypatch.setattr(Emulator, "issue_token", recording)
    return tokens


def test_the_leak_scanner_finds_a_planted_secret(tmp_path: Path) -> None:
    """The search below is only worth something if it finds what it looks for, even in SQLite and Parquet."""
    import sqlite3

    (tmp_path / "log.txt").write_text(f"token={CANARY}\n", encoding="utf-8")
    pq.write_table(pa.table({"error": [f"x {CANARY} y" * 50]}), tmp_path / "frame.parquet", compression="zstd")
    with sqlite3.connect(tmp_path / "events.db") as db:
        db.execute("CREATE TABLE events (body TEXT)")
        db.execute("INSERT INTO events VALUES (?)", (json.dumps({"message": CANARY}),))
    db.close()
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing here", encoding="utf-8")

    found = leaks([tmp_path], [CANARY], exclude=[clean])

    assert len(found) == 3, found
    assert leaks([clean], [CANARY]) == []


@pytest.mark.slow
def test_no_secret_or_token_in_anything_written(
    tmp_path: Path,
    clean_env: dict[str, str],
    issued_tokens: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    home = Path(clean_env["DAGSTER_HOME"])
    texts: list[tuple[str, str]] = []

    # 1. The demo (embedded emulator, published demo credential), in this process so its tokens are seen.
    assert main(["demo"]) == 0
    captured = capsys.readouterr()
    texts.append(("demo output", captured.out + captured.err))

    emulator_db = tmp_path / "target" / "emulator.sqlite"
    emulator_db.parent.mkdir()
    config = EmulatorConfig(db_path=emulator_db, clients={CLIENT_ID: CANARY})
    roster = tmp_path / "roster"
    users = [person(i) for i in range(20)]
    write_roster(roster, users, ["Vault Admins"], [("Vault Admins", users[0]["user_name"])])
    with EmulatorServer(config) as server:
        env = {
            **clean_env,
            "SCIM_BASE_URL": server.base_url,
            "SCIM_TOKEN_URL": server.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CANARY,
            "SCIM_ROSTER": str(roster),
            "SCIM_SHARDS": "2",
        }
        # 2. sync and check as separate processes, as a user runs them.
        for args, secret, expected in (
            (("sync",), CANARY, 0),
            (("check",), CANARY, 0),
            (("check",), WRONG_CANARY, 1),
        ):
            result = run_cli(*args, env={**env, "SCIM_CLIENT_SECRET": secret})
            assert result.returncode == expected, result.stdout + result.stderr
            texts.append((f"{' '.join(args)} output", result.stdout + result.stderr))

        # 3. In this process at DEBUG: a sync that works, then a failing run (the token endpoint refuses us).
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        write_roster(roster, [*users, person(20)], ["Vault Admins"], [])
        assert main(["sync"]) == 0
        write_roster(roster, [*users, person(20), person(21)], ["Vault Admins"], [])
        monkeypatch.setenv("SCIM_CLIENT_SECRET", WRONG_CANARY)
        assert main(["sync"]) == 1
        captured = capsys.readouterr()
        texts.append(("in-process sync output", captured.out + captured.err))
        assert "result: FAILED" in captured.out
        assert "401" in captured.out, "the failing run's summary says the token endpoint refused the client"

        # 4. The errors themselves, and the objects that hold the secret.
        async def refused() -> BaseException:
            settings = ConnectionSettings.from_env({**env, "SCIM_CLIENT_SECRET": WRONG_CANARY})
            async with ScimClient(settings) as client:
                try:
                    await client.search("Users")
                except ScimPipelineError as error:
                    return error
            raise AssertionError("a wrong secret was accepted")

        error = asyncio.run(refused())
        assert isinstance(error, AuthenticationError)
        texts.append(("token refusal", exception_text(error)))
        settings = ConnectionSettings.from_env(env)
        texts.append(("settings", f"{settings!r} {settings} {settings.model_dump()} {settings.model_dump_json()}"))
        pipeline_settings = PipelineSettings.from_env(env)
        texts.append(("pipeline settings", f"{pipeline_settings!r} {pipeline_settings.model_dump()}"))
        texts.append(("target resource", repr(target_resource(pipeline_settings))))
    texts.append(("log records", _log_text(caplog.records)))

    assert len(issued_tokens) >= 4, "the flows above fetched tokens; the recorder saw too few"
    needles = needles_for([CANARY, WRONG_CANARY], issued_tokens)
    found = [hit for where, text in texts for hit in leaks_in_text(where, text, needles)]
    found += leaks([home], needles, exclude=[emulator_db])
    assert found == []
    # The searched storage is real: the instance recorded runs and events, the state store its audit trail.
    written = {p.name for p in home.rglob("*") if p.is_file()}
    assert "state.sqlite" in written
    assert any(name.endswith(".db") for name in written)  # the runs, their events and metadata (who changed, how)


def _log_text(records: Sequence[logging.LogRecord]) -> str:
    lines = []
    for record in records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            lines.append(exception_text(record.exc_info[1]))
        if record.exc_text:
            lines.append(record.exc_text)
    return "\n".join(lines)


# -- TLS ----------------------------------------------------------------------------------------------------------


class _ServiceProviderConfig(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback https server with a self-signed certificate: (base URL, the certificate as a CA bundle)."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ServiceProviderConfig)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/scim/v2", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_tls_verification_is_on_by_default() -> None:
    settings = ConnectionSettings(base_url="https://tenant.example.com/scim/v2")
    assert settings.verify_tls is True
    assert settings.tls_verify is True


def test_a_self_signed_certificate_is_refused_unless_its_ca_is_given(https_server: tuple[str, Path]) -> None:
    base_url, cert = https_server

    async def discover(settings: ConnectionSettings) -> object:
        async with ScimClient(settings) as client:
            return await client.get_json("/ServiceProviderConfig")

    with pytest.raises(ScimTransportError, match=r"(?i)certificate|ssl|ConnectError"):
        asyncio.run(discover(ConnectionSettings(base_url=base_url, max_attempts=1)))
    trusted = asyncio.run(discover(ConnectionSettings(base_url=base_url, ca_bundle=cert, max_attempts=1)))
    assert isinstance(trusted, dict)
    assert trusted["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]


@pytest.mark.parametrize(
    ("variable", "env"),
    [
        ("SCIM_BASE_URL", {"SCIM_BASE_URL": "http://scim.example.com/scim/v2"}),
        (
            "SCIM_TOKEN_URL",
            {"SCIM_BASE_URL": "https://scim.example.com/scim/v2", "SCIM_TOKEN_URL": "http://idp.example.com/token"},
        ),
    ],
)
def test_plain_http_to_a_remote_host_is_refused_naming_the_variable(variable: str, env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=variable) as refused:
        ConnectionSettings.from_env(env)
    assert "https is required" in str(refused.value)


def test_plain_http_to_loopback_is_accepted() -> None:
    assert ConnectionSettings(base_url="http://127.0.0.1:8080/scim/v2").base_url.startswith("http://127.0.0.1")


def test_check_refuses_plain_http_to_a_remote_host_before_any_request(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "SCIM_BASE_URL": "http://scim.example.com/scim/v2", "SCIM_CLIENT_ID": CLIENT_ID}
    env["SCIM_CLIENT_SECRET"] = CANARY

    result = run_cli("check", env=env, timeout_s=120)

    assert result.returncode == 1
    assert "SCIM_BASE_URL" in result.stderr
    assert "https is required" in result.stderr
    assert "Traceback" not in result.stderr
    assert CANARY not in result.stdout + result.stderr
