"""The one scrubber of server text: registered secrets, credentials and token-shaped strings go; ids and words stay."""

from __future__ import annotations

import base64

import pytest

from scim_pipeline.scim.redaction import REDACTED, register_secret, scrub


def test_a_registered_secret_is_removed_also_url_encoded() -> None:
    register_secret("p@ss word/42!")
    assert scrub("the secret p@ss word/42! is wrong") == f"the secret {REDACTED} is wrong"
    assert "42" not in scrub("client_secret=p%40ss+word%2F42%21&grant_type=client_credentials")


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc.def-123",
        '{"authorization": "Basic ' + base64.b64encode(b"id:secret").decode() + '"}',
        "token was Bearer 0123456789abcdef",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "opaque 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 run",
    ],
)
def test_credentials_and_token_shaped_strings_are_removed(text: str) -> None:
    scrubbed = scrub(text)
    assert REDACTED in scrubbed
    for fragment in ("abc.def-123", "aWQ6c2VjcmV0", "0123456789abcdef", "dozjgNry", "9f86d081884c"):
        assert fragment not in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "User 2819c223-7f76-453a-919d-413861904646 not found",
        "Bearer authentication is required",
        "Attribute urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department is read-only",
        "",
    ],
)
def test_ids_words_and_schema_names_are_kept(text: str) -> None:
    assert scrub(text) == text
