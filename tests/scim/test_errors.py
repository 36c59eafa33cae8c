"""RFC 7644 §3.12 error bodies, and everything else servers send, become typed exceptions."""

from __future__ import annotations

import pickle

import httpx
import pytest

from scim_pipeline.scim import (
    AuthenticationError,
    ScimBadRequest,
    ScimClientError,
    ScimConflict,
    ScimHTTPError,
    ScimNotFound,
    ScimPreconditionFailed,
    ScimServerError,
    ScimServiceUnavailable,
)
from scim_pipeline.scim.errors import error_from_response, mask_quoted

from .mock_service import scim_error


def _error(response: httpx.Response) -> ScimHTTPError:
    return error_from_response(response, method="GET", resource_type="Users")


def test_rfc_error_body_gives_status_scim_type_and_detail() -> None:
    error = _error(scim_error(400, "invalidFilter", "Unsupported filter"))
    assert isinstance(error, ScimBadRequest)
    assert (error.status, error.scim_type, error.detail) == (400, "invalidFilter", "Unsupported filter")
    assert error.method == "GET"
    assert error.resource_type == "Users"


@pytest.mark.parametrize(
    ("status", "scim_type", "expected"),
    [
        (409, None, ScimConflict),
        (400, "uniqueness", ScimConflict),  # classified by scimType when present
        (412, None, ScimPreconditionFailed),
        (400, "invalidVers", ScimPreconditionFailed),
        (404, None, ScimNotFound),
        (418, None, ScimClientError),
        (503, None, ScimServiceUnavailable),
        (500, None, ScimServerError),
        (400, "someVendorType", ScimBadRequest),  # unknown scimType: by status
    ],
)
def test_errors_are_classified_by_scim_type_then_status(
    status: int, scim_type: str | None, expected: type[ScimHTTPError]
) -> None:
    assert type(_error(scim_error(status, scim_type))) is expected


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(
            502,
            text="<html><title>502 Bad Gateway</title><body>nginx</body></html>",
            headers={"Content-Type": "text/html"},
        ),
        httpx.Response(500, text="Internal error", headers={"Content-Type": "text/plain"}),
        httpx.Response(503),
        httpx.Response(400, content=b"{not json", headers={"Content-Type": "application/json"}),
        httpx.Response(400, json=["a", "list"]),
        httpx.Response(400, content=b"\xff\xfe\x00garbage"),
        httpx.Response(409, json={"status": 409, "scimType": 12, "detail": None}),
    ],
)
def test_non_rfc_error_bodies_never_crash(response: httpx.Response) -> None:
    error = _error(response)
    assert error.status == response.status_code
    assert str(response.status_code) in str(error)


def test_plain_text_body_becomes_the_detail() -> None:
    error = _error(httpx.Response(500, text="Secret Server unreachable"))
    assert error.detail == "Secret Server unreachable"


def test_echoed_filter_values_are_masked_in_the_message() -> None:
    error = _error(scim_error(400, "invalidFilter", 'Bad filter: userName eq "alice.smith"'))
    assert "alice.smith" not in str(error)
    assert "alice.smith" not in (error.detail or "")
    assert mask_quoted('a "b \\" c" d') == 'a "…" d'


def test_long_details_are_truncated() -> None:
    error = _error(scim_error(400, detail="x" * 5000))
    assert error.detail is not None
    assert len(error.detail) <= 200


def test_errors_survive_pickling_with_their_attributes() -> None:
    error = _error(scim_error(409, "uniqueness", "exists"))
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(restored) is ScimConflict
    assert (restored.status, restored.scim_type, restored.detail) == (409, "uniqueness", "exists")
    assert str(restored) == str(error)
    auth = AuthenticationError("refused", token_url="https://t", status=401, oauth_error="x")
    assert pickle.loads(pickle.dumps(auth)).oauth_error == "x"  # noqa: S301
