"""SCIM resource models on scim2-models: User (with the enterprise extension), Group, and Delinea's
Container, ContainerPermission and PrivilegedData.

The Delinea URNs come from ``draft-grizzle-scim-pam-ext-01`` (co-written by Thycotic, now
Delinea); the Cloud Connector's own schemas are not published, so parsing tolerates unknown
attributes (they are kept on the model, readable through ``unknown_attributes``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from scim2_models import (
    URN,
    ComplexAttribute,
    Context,
    EnterpriseUser,
    Group,
    Mutability,
    Required,
    Resource,
    ScimPolicy,
    User,
)

from .errors import ConfigurationError

__all__ = [
    "RESOURCE_MODELS",
    "Container",
    "ContainerPermission",
    "EnterpriseUser",
    "Group",
    "PrivilegedData",
    "ScimUser",
    "parse_resource",
    "resource_payload",
]

PAM_SCHEMA_PREFIX = "urn:ietf:params:scim:schemas:pam:1.0"

ScimUser = User[EnterpriseUser]
"""A core User with the enterprise extension (department, employeeNumber, manager …)."""


class ResourceLink(ComplexAttribute):
    """A reference to another resource: ``{"value": id, "display": name, "$ref": uri}``."""

    value: str | None = None
    display: str | None = None
    ref: str | None = Field(None, serialization_alias="$ref", validation_alias="$ref")


class Container(Resource[Any]):
    """A Secret Server folder (Delinea: create and search by name only)."""

    __schema__ = URN(f"{PAM_SCHEMA_PREFIX}:Container")

    name: Annotated[str | None, Required.true] = None
    display_name: str | None = None
    description: str | None = None
    parent: ResourceLink | None = None


class ContainerPermission(Resource[Any]):
    """A right granted to a user or a group on a container (shape from Delinea's on-prem logs)."""

    __schema__ = URN(f"{PAM_SCHEMA_PREFIX}:ContainerPermission")

    container: Annotated[ResourceLink | None, Mutability.immutable] = None
    user: Annotated[ResourceLink | None, Mutability.immutable] = None
    group: Annotated[ResourceLink | None, Mutability.immutable] = None
    rights: list[str] | None = None


class PrivilegedData(Resource[Any]):
    """A secret held in a container (Delinea: creating one through SCIM is blocked)."""

    __schema__ = URN(f"{PAM_SCHEMA_PREFIX}:PrivilegedData")

    name: str | None = None
    display_name: str | None = None
    container: ResourceLink | None = None
    privileged_data: ResourceLink | None = None


RESOURCE_MODELS: dict[str, type[Resource[Any]]] = {
    "Users": ScimUser,
    "Groups": Group,
    "Containers": Container,
    "ContainerPermissions": ContainerPermission,
    "PrivilegedData": PrivilegedData,
}
"""The model of each resource type, keyed by endpoint name."""

_TOLERANT = ScimPolicy(unknown=ScimPolicy.Unknown.keep)


def parse_resource(resource_type: str, payload: dict[str, Any]) -> Resource[Any]:
    """Validate a server's response payload into its model, tolerating unknown attributes."""
    try:
        model = RESOURCE_MODELS[resource_type]
    except KeyError:
        known = ", ".join(RESOURCE_MODELS)
        raise ConfigurationError(f"no model for resource type {resource_type!r} (known: {known})") from None
    return model.model_validate(payload, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=_TOLERANT)


def resource_payload(resource: dict[str, Any] | Resource[Any], *, replacing: bool = False) -> dict[str, Any]:
    """The JSON body for a create (or a replace) request: dicts pass through unchanged."""
    if isinstance(resource, dict):
        return resource
    context = Context.RESOURCE_REPLACEMENT_REQUEST if replacing else Context.RESOURCE_CREATION_REQUEST
    return resource.model_dump(scim_ctx=context)
