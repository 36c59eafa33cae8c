"""Discovery tolerates absent endpoints and odd shapes."""

from __future__ import annotations

import httpx
import pytest

from scim_pipeline.scim import ScimClient, discover
from scim_pipeline.scim.discovery import endpoint_name, parse_capabilities

from .emulated_target import emulated, emulator_settings
from .loopback import LoopbackScimServer
from .mock_service import MockScim, loopback_settings, mock_settings, scim_json


def test_bulk_unsupported_without_max_operations_parses() -> None:
    caps = parse_capabilities({"bulk": {"supported": False}, "patch": {"supported": "true"}})
    assert caps.bulk is False
    assert caps.bulk_max_operations is None
    assert caps.patch is True
    assert caps.filter is None  # absent: not announced, never "unlimited"
    assert caps.filter_max_results is None


def test_odd_shapes_never_raise() -> None:
    caps = parse_capabilities(
        {
            "bulk": "nope",
            "filter": {"supported": True, "maxResults": "200"},
            "etag": None,
            "authenticationSchemes": [{"type": "oauthbearertoken"}, "junk"],
        },
        resource_types=[{"name": "User", "endpoint": "/Users"}, {"endpoint": 5}, "junk"],
        schemas={"Resources": [{"id": "urn:x"}, {"no": "id"}]},
    )
    assert caps.bulk is None
    assert caps.filter_max_results == 200
    assert caps.resource_types == {"Users": "User"}
    assert caps.serves("/Users") is True
    assert caps.serves("Groups") is False
    assert caps.schemas == ["urn:x"]
    assert caps.authentication_schemes == ["oauthbearertoken"]


def test_a_single_resource_type_object_is_read_as_a_list() -> None:
    caps = parse_capabilities(None, resource_types={"name": "User", "endpoint": "/Users"})
    assert caps.resource_types == {"Users": "User"}
    assert caps.serves("Users") is True


async def test_absent_discovery_endpoints_are_tolerated() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ServiceProviderConfig"):
            return scim_json(200, {"bulk": {"supported": False}, "patch": {"supported": True}})
        if request.url.path.endswith("/ResourceTypes"):
            return httpx.Response(501, text="Not Implemented")
        return httpx.Response(404)

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        caps = await discover(client)
    assert caps.service_provider_config_served
    assert not caps.resource_types_served
    assert not caps.schemas_served
    assert caps.serves("Users") is None
    assert ("bulk", "no") in caps.summary()
    assert any("/ResourceTypes: not served" in note for note in caps.notes)


async def test_a_failing_discovery_endpoint_becomes_a_note() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="Forbidden")

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        caps = await discover(client)
    assert not caps.service_provider_config_served
    assert any("HTTP 403" in note for note in caps.notes)


async def test_scim2_server_announcements_are_read(loopback: LoopbackScimServer) -> None:
    async with ScimClient(loopback_settings(loopback)) as client:
        caps = await discover(client)
    assert (caps.patch, caps.bulk, caps.filter, caps.filter_max_results) == (True, True, True, 50)
    assert set(caps.resource_types) == {"Users", "Groups"}
    assert "urn:ietf:params:scim:schemas:core:2.0:User" in caps.schemas


@pytest.mark.parametrize(
    "endpoint",
    ["Users", "/Users", "/Users/", "/scim/v2/Users", "https://tenant.example.test/scim/v2/Users"],
)
def test_absolute_and_relative_endpoints_name_the_same_resource_type(endpoint: str) -> None:
    assert endpoint_name(endpoint, "https://tenant.example.test/scim/v2") == "Users"


@pytest.mark.parametrize(
    "endpoint", ["https://elsewhere.example.test/scim/v2/Users", "https://tenant.example.test/other/Users"]
)
def test_an_endpoint_outside_the_base_url_is_ignored_with_a_note(endpoint: str) -> None:
    caps = parse_capabilities(
        None, resource_types=[{"name": "User", "endpoint": endpoint}], base_url="https://tenant.example.test/scim/v2"
    )
    assert caps.resource_types == {}
    assert any("outside the base URL" in note for note in caps.notes)


async def test_a_server_announcing_absolute_endpoints_is_read_under_its_base_url() -> None:
    with emulated(absolute_endpoints=True) as server:
        async with ScimClient(emulator_settings(server)) as client:
            caps = await discover(client)
        raw = [r for r in caps.resource_type_documents if r["name"] == "User"]
    assert caps.serves("Users") is True
    assert caps.serves("Groups") is True
    assert raw[0]["endpoint"] == "Users"
