"""Resource models on scim2-models; unknown attributes in responses are tolerated."""

from __future__ import annotations

import pytest

from scim_pipeline.scim import (
    ConfigurationError,
    Container,
    ContainerPermission,
    Group,
    PrivilegedData,
    ScimUser,
    parse_resource,
)
from scim_pipeline.scim.models import resource_payload

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PAM = "urn:ietf:params:scim:schemas:pam:1.0"


def test_a_user_with_the_enterprise_extension_and_unknown_attributes_parses() -> None:
    user = parse_resource(
        "Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "id": "u1",
            "userName": "jdoe",
            ENTERPRISE: {"department": "Finance", "employeeNumber": "42"},
            "delineaInternalFlag": True,
        },
    )
    assert isinstance(user, ScimUser)
    assert user.user_name == "jdoe"
    assert user[ENTERPRISE].department == "Finance"  # type: ignore[index]
    assert user.unknown_attributes == {"delineaInternalFlag": True}


def test_a_container_permission_parses_with_its_links_and_rights() -> None:
    permission = parse_resource(
        "ContainerPermissions",
        {
            "schemas": [f"{PAM}:ContainerPermission"],
            "id": "p1",
            "container": {"value": "c1", "display": "Finance", "$ref": "https://x/Containers/c1"},
            "group": {"value": "g1", "display": "Finance admins"},
            "rights": ["Owner", "View"],
            "unannounced": {"nested": 1},
        },
    )
    assert isinstance(permission, ContainerPermission)
    assert permission.container is not None
    assert permission.container.ref == "https://x/Containers/c1"
    assert permission.group is not None
    assert permission.group.value == "g1"
    assert permission.rights == ["Owner", "View"]


@pytest.mark.parametrize(
    ("resource_type", "model", "urn"),
    [
        ("Containers", Container, f"{PAM}:Container"),
        ("ContainerPermissions", ContainerPermission, f"{PAM}:ContainerPermission"),
        ("PrivilegedData", PrivilegedData, f"{PAM}:PrivilegedData"),
        ("Groups", Group, "urn:ietf:params:scim:schemas:core:2.0:Group"),
    ],
)
def test_each_resource_type_has_its_model_and_urn(resource_type: str, model: type, urn: str) -> None:
    parsed = parse_resource(
        resource_type,
        {"schemas": [urn], "id": "x", "displayName": "d"}
        if resource_type == "Groups"
        else {"schemas": [urn], "id": "x"},
    )
    assert isinstance(parsed, model)
    assert str(model.__schema__) == urn


def test_models_dump_creation_payloads() -> None:
    assert resource_payload(Container(name="Finance")) == {
        "schemas": [f"{PAM}:Container"],
        "name": "Finance",
    }
    raw = {"userName": "as-is"}
    assert resource_payload(raw) is raw


def test_an_unknown_resource_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Widgets"):
        parse_resource("Widgets", {})
