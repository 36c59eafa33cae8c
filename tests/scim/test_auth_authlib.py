"""Client authentication against a real authorization server nobody here wrote: Authlib's own ``AuthorizationServer``
over loopback, with scim2-server beside it accepting only the tokens Authlib issued (see ``authlib_server.py``).

- a client registered for ``client_secret_basic`` only (Authlib's default): the default settings get a token, and a
  configured ``client_secret_post`` is refused in one line naming ``SCIM_TOKEN_AUTH``;
- a client registered for ``private_key_jwt`` only: Authlib verifies the signature with the registered public key,
  the audience and a ``jti`` it has never seen; a replayed assertion and a wrong key are refused;
- RFC 8414 metadata decides the method when the profile lets the client read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from scim_pipeline.scim import ConnectionSettings, CredentialsRefused, ScimClient

from .authlib_server import AuthlibServer, RegisteredClient, new_rsa_key, private_pem, public_pem

BASIC_ID, BASIC_SECRET = "basic-only-client", "Basic-Only-Secret-9d2e-never-printed"
POST_ID, POST_SECRET = "post-only-client", "Post-Only-Secret-51aa-never-printed"
JWT_ID = "jwt-only-client"


@pytest.fixture(scope="module")
def client_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture
def server(client_key: rsa.RSAPrivateKey) -> Iterator[AuthlibServer]:
    clients = [
        RegisteredClient(BASIC_ID, "client_secret_basic", client_secret=BASIC_SECRET),
        RegisteredClient(POST_ID, "client_secret_post", client_secret=POST_SECRET),
        RegisteredClient(JWT_ID, "private_key_jwt", public_key_pem=public_pem(client_key)),
    ]
    with AuthlibServer(clients) as running:
        yield running


def settings(server: AuthlibServer, client_id: str, **overrides: object) -> ConnectionSettings:
    values: dict[str, object] = {
        "base_url": server.base_url,
        "token_url": server.token_url,
        "client_id": client_id,
        "profile": "rfc7644",
        "max_retry_wait_s": 0.05,
        **overrides,
    }
    return ConnectionSettings(**values)


def key_file(folder: Path, key: rsa.RSAPrivateKey, name: str = "client-key.pem") -> str:
    path = folder / name
    path.write_bytes(private_pem(key))
    return str(path)


async def create_one(settings: ConnectionSettings, user_name: str) -> None:
    async with ScimClient(settings) as client:
        created = await client.create("Users", {"userName": user_name})
        assert created.scim_id


async def refusal(settings: ConnectionSettings) -> CredentialsRefused:
    async with ScimClient(settings) as client:
        with pytest.raises(CredentialsRefused) as refused:
            await client.authenticate()
    return refused.value


# -- a client registered for HTTP Basic only ----------------------------------------------------------------------


async def test_the_default_settings_authenticate_with_basic_where_only_basic_is_accepted(server: AuthlibServer) -> None:
    await create_one(settings(server, BASIC_ID, client_secret=BASIC_SECRET), "basic@example.test")

    assert server.methods_seen() == ["client_secret_basic"]
    assert [seen.status for seen in server.token_requests] == [200]
    assert server.user_names() == {"basic@example.test"}


async def test_the_delinea_profile_sends_the_body_first_then_learns_basic_from_invalid_client(
    server: AuthlibServer,
) -> None:
    # The Delinea profile reads no metadata and starts with client_secret_post (what Delinea documents).
    await create_one(settings(server, BASIC_ID, client_secret=BASIC_SECRET, profile="delinea"), "learnt@example.test")

    assert server.methods_seen() == ["client_secret_post", "client_secret_basic"]
    assert [seen.status for seen in server.token_requests] == [401, 200]


async def test_client_secret_post_configured_for_a_basic_only_client_is_one_line_naming_scim_token_auth(
    server: AuthlibServer,
) -> None:
    refused = await refusal(
        settings(server, BASIC_ID, client_secret=BASIC_SECRET, token_auth="client_secret_post"),
    )

    message = str(refused)
    assert "\n" not in message
    assert "SCIM_TOKEN_AUTH" in message
    assert "invalid_client" in message
    assert BASIC_SECRET not in message
    assert server.methods_seen() == ["client_secret_post"], "a configured method is never swapped"
    assert server.scim_requests == 0


# -- a client registered for private_key_jwt only ------------------------------------------------------------------


async def test_private_key_jwt_is_verified_by_authlib_with_the_registered_public_key(
    server: AuthlibServer, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    configured = settings(server, JWT_ID, client_key_file=key_file(tmp_path, client_key))

    await create_one(configured, "jwt-1@example.test")
    await create_one(configured, "jwt-2@example.test")  # a second process: a second, fresh assertion

    assert server.methods_seen() == ["private_key_jwt", "private_key_jwt"]
    assert [seen.status for seen in server.token_requests] == [200, 200]
    assert len(server.seen_jtis) == 2, "each assertion carries a jti the server has not seen"
    assert server.user_names() == {"jwt-1@example.test", "jwt-2@example.test"}


async def test_a_replayed_assertion_is_refused_by_the_server(
    server: AuthlibServer, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    await create_one(settings(server, JWT_ID, client_key_file=key_file(tmp_path, client_key)), "once@example.test")
    first_form = server.token_requests[0].form

    async with httpx.AsyncClient() as http:
        replayed = await http.post(server.token_url, data=first_form)

    # The check is real: what our client sends passes it only because every assertion is new.
    assert replayed.status_code in (400, 401)
    assert replayed.json()["error"] == "invalid_client"
    assert "used before" in replayed.json()["error_description"]


async def test_a_key_the_server_does_not_know_is_one_line_naming_scim_client_key_file(
    server: AuthlibServer, tmp_path: Path
) -> None:
    wrong = key_file(tmp_path, new_rsa_key(), "not-the-registered-key.pem")

    refused = await refusal(settings(server, JWT_ID, client_key_file=wrong, token_auth="private_key_jwt"))

    message = str(refused)
    assert "\n" not in message
    assert "SCIM_CLIENT_KEY_FILE" in message
    assert "invalid_client" in message
    assert "BEGIN" not in message
    assert server.methods_seen() == ["private_key_jwt"]
    assert server.token_requests[0].status in (400, 401)
    assert server.scim_requests == 0


async def test_a_secret_client_is_not_let_in_by_an_assertion_signed_with_some_key(
    server: AuthlibServer, tmp_path: Path
) -> None:
    refused = await refusal(
        settings(server, BASIC_ID, client_key_file=key_file(tmp_path, new_rsa_key()), token_auth="private_key_jwt")
    )

    assert "SCIM_CLIENT_KEY_FILE" in str(refused)
    assert server.tokens == {}


# -- RFC 8414 metadata ---------------------------------------------------------------------------------------------


async def test_metadata_naming_only_the_body_method_sends_it_first(client_key: rsa.RSAPrivateKey) -> None:
    only_post = [RegisteredClient(POST_ID, "client_secret_post", client_secret=POST_SECRET)]
    with AuthlibServer(only_post) as published:
        await create_one(settings(published, POST_ID, client_secret=POST_SECRET), "a@example.test")
    with AuthlibServer(only_post, publish_metadata=False) as silent:
        await create_one(settings(silent, POST_ID, client_secret=POST_SECRET), "b@example.test")

    assert published.metadata_requests == 1
    assert published.methods_seen() == ["client_secret_post"], "one token request: the metadata said how"
    # Without metadata the RFC 7644 default (Basic, which every server MUST accept) goes first and is refused.
    assert silent.metadata_requests == 1
    assert silent.methods_seen() == ["client_secret_basic", "client_secret_post"]
