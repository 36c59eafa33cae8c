"""Service-provider profiles state, per resource type, the operations and filters allowed."""

from __future__ import annotations

import pytest

from scim_pipeline.scim import (
    DELINEA,
    RFC7644,
    ConfigurationError,
    Operation,
    OperationRefused,
    get_profile,
)

ALL = set(Operation)


@pytest.mark.parametrize(
    ("resource_type", "allowed"),
    [
        ("Users", ALL),
        ("Groups", ALL - {Operation.DELETE}),
        ("Containers", {Operation.CREATE, Operation.SEARCH, Operation.GET}),
        ("ContainerPermissions", {Operation.CREATE, Operation.DELETE, Operation.SEARCH}),
        ("PrivilegedData", ALL - {Operation.CREATE}),
    ],
)
def test_delinea_allows_only_the_published_operations(resource_type: str, allowed: set[Operation]) -> None:
    for operation in Operation:
        if operation in allowed:
            DELINEA.require(resource_type, operation)
        else:
            with pytest.raises(OperationRefused, match=operation.value):
                DELINEA.require(resource_type, operation)


def test_a_refused_operation_names_what_is_allowed() -> None:
    with pytest.raises(OperationRefused) as caught:
        DELINEA.require("Groups", Operation.DELETE)
    assert "does not allow delete on Groups" in str(caught.value)
    assert "get, search, create, replace, patch" in str(caught.value)


def test_rfc7644_allows_every_operation_on_users_and_groups() -> None:
    for resource_type in ("Users", "Groups"):
        for operation in Operation:
            RFC7644.require(resource_type, operation)
    with pytest.raises(OperationRefused, match="no resource type 'Containers'"):
        RFC7644.require("Containers", Operation.SEARCH)


def test_only_container_permissions_require_a_filter() -> None:
    required = {name for name, rules in DELINEA.resource_types.items() if rules.filters.required}
    assert required == {"ContainerPermissions"}


def test_match_attributes_default_to_the_natural_keys() -> None:
    assert DELINEA.rules("Users").match_attribute == "userName"
    assert DELINEA.rules("Groups").match_attribute == "displayName"
    assert DELINEA.rules("Containers").match_attribute == "name"


def test_get_profile_is_case_insensitive_and_refuses_unknown_names() -> None:
    assert get_profile("Delinea") is DELINEA
    assert get_profile(RFC7644) is RFC7644
    with pytest.raises(ConfigurationError, match="valid profiles: delinea, rfc7644"):
        get_profile("azure")
