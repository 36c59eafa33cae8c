"""``scim-pipeline`` in a subprocess against Authlib's own authorization server (a client registered for HTTP Basic
only, or for ``private_key_jwt`` only) with scim2-server beside it, every setting from the environment as a user
gives them: the default ``SCIM_TOKEN_AUTH`` (auto) reads the server's RFC 8414 metadata and authenticates as it
publishes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .authlib_server import AuthlibServer, RegisteredClient, new_rsa_key, private_pem, public_pem

ROOT = Path(__file__).resolve().parents[2]
BASIC_ID, BASIC_SECRET = "pipeline-basic", "Basic-Only-0c5e-never-printed"
JWT_ID = "pipeline-jwt"
KEY = new_rsa_key()
USER_NAMES = [f"user{index}@example.com" for index in range(3)]


@pytest.fixture
def server() -> Iterator[AuthlibServer]:
    clients = [
        RegisteredClient(BASIC_ID, "client_secret_basic", client_secret=BASIC_SECRET),
        RegisteredClient(JWT_ID, "private_key_jwt", public_key_pem=public_pem(KEY)),
    ]
    with AuthlibServer(clients) as running:
        yield running


def _roster(folder: Path) -> Path:
    folder.mkdir()
    with (folder / "users.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_name", "given_name", "family_name", "email"])
        for index, user_name in enumerate(USER_NAMES):
            writer.writerow([user_name, f"Given{index}", f"Family{index}", user_name])
    return folder


def _run(command: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scim_pipeline.cli", command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


def _env(server: AuthlibServer, tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCIM_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        DAGSTER_HOME=str(home),
        SCIM_BASE_URL=server.base_url,
        SCIM_TOKEN_URL=server.token_url,
        SCIM_PROFILE="rfc7644",
        SCIM_SHARDS="1",
        SCIM_MAX_RETRY_WAIT_S="0.05",
        **settings,
    )
    return env


def test_sync_provisions_through_a_basic_only_authorization_server(server: AuthlibServer, tmp_path: Path) -> None:
    env = _env(
        server,
        tmp_path,
        SCIM_CLIENT_ID=BASIC_ID,
        SCIM_CLIENT_SECRET=BASIC_SECRET,
        SCIM_ROSTER=str(_roster(tmp_path / "roster")),
    )

    done = _run("sync", env)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert server.user_names() == set(USER_NAMES)
    assert server.metadata_requests >= 1
    assert set(server.methods_seen()) == {"client_secret_basic"}, "the metadata said Basic: nothing else was tried"
    assert all(seen.status == 200 for seen in server.token_requests)
    assert BASIC_SECRET not in output


def test_check_authenticates_with_private_key_jwt_and_a_wrong_key_is_one_line(
    server: AuthlibServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "client.pem"
    key_file.write_bytes(private_pem(KEY))
    wrong_file = tmp_path / "wrong.pem"
    wrong_file.write_bytes(private_pem(new_rsa_key()))
    env = _env(server, tmp_path, SCIM_CLIENT_ID=JWT_ID, SCIM_CLIENT_KEY_FILE=str(key_file))

    good = _run("check", env)
    env["SCIM_CLIENT_KEY_FILE"] = str(wrong_file)
    wrong = _run("check", env)

    assert good.returncode == 0, good.stdout + good.stderr
    assert wrong.returncode != 0
    output = wrong.stdout + wrong.stderr
    lines = [line for line in output.splitlines() if "SCIM_CLIENT_KEY_FILE" in line]
    assert lines, output
    assert "invalid_client" in lines[0]
    assert "Traceback" not in output
    assert "PRIVATE KEY" not in output
    assert server.methods_seen() == ["private_key_jwt", "private_key_jwt"]
    assert server.token_requests[0].status == 200
