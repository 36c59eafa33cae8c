"""Delinea's published rules for each resource type: operations offered and filters accepted.

Kept here rather than imported from ``scim_pipeline.scim`` so the emulator states the target's rules on
its own; a disagreement between the two surfaces in the integration tests instead of being hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
CONTAINER_SCHEMA = "urn:ietf:params:scim:schemas:pam:1.0:Container"
CONTAINER_PERMISSION_SCHEMA = "urn:ietf:params:scim:schemas:pam:1.0:ContainerPermission"
PRIVILEGED_DATA_SCHEMA = "urn:ietf:params:scim:schemas:pam:1.0:PrivilegedData"
LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Operation(StrEnum):
    CREATE = "create"
    GET = "get"
    SEARCH = "search"
    REPLACE = "replace"
    PATCH = "patch"
    DELETE = "delete"


EQ_CO = frozenset({"eq", "co"})
EQ = frozenset({"eq"})


@dataclass(frozen=True, slots=True)
class ResourceRules:
    """One resource type as Delinea's Cloud Connector serves it."""

    endpoint: str
    """The endpoint name, also the resource type's name in ``meta.resourceType``."""
    schema: str
    extensions: tuple[str, ...]
    operations: frozenset[Operation]
    filters: dict[str, frozenset[str]]
    """Accepted filter attribute (lower-cased, ``attr`` or ``attr.sub``) -> accepted operators."""
    filter_required: bool = False


_PRINCIPAL_FILTERS = {
    "user.display": EQ_CO,
    "user.value": EQ,
    "group.display": EQ_CO,
    "group.value": EQ,
}

RULES: dict[str, ResourceRules] = {
    rules.endpoint: rules
    for rules in (
        ResourceRules(
            endpoint="Users",
            schema=USER_SCHEMA,
            extensions=(ENTERPRISE_USER_SCHEMA,),
            operations=frozenset(Operation),
            filters={"username": EQ_CO, "displayname": EQ_CO},
        ),
        ResourceRules(
            endpoint="Groups",
            schema=GROUP_SCHEMA,
            extensions=(),
            operations=frozenset(Operation) - {Operation.DELETE},
            filters={"username": EQ_CO, "displayname": EQ_CO},
        ),
        ResourceRules(
            endpoint="Containers",
            schema=CONTAINER_SCHEMA,
            extensions=(),
            operations=frozenset({Operation.CREATE, Operation.GET, Operation.SEARCH}),
            filters={"name": EQ_CO, "displayname": EQ_CO},
        ),
        ResourceRules(
            endpoint="ContainerPermissions",
            schema=CONTAINER_PERMISSION_SCHEMA,
            extensions=(),
            operations=frozenset({Operation.CREATE, Operation.DELETE, Operation.SEARCH}),
            filters={"container.value": EQ, **_PRINCIPAL_FILTERS},
            filter_required=True,
        ),
        ResourceRules(
            endpoint="PrivilegedData",
            schema=PRIVILEGED_DATA_SCHEMA,
            extensions=(),
            # Creating privileged data is blocked; it is only moved into or out of a container.
            operations=frozenset({Operation.GET, Operation.SEARCH, Operation.PATCH}),
            filters={"privilegeddata.value": EQ, **_PRINCIPAL_FILTERS},
        ),
    )
}

MULTI_VALUED = frozenset(
    {
        "emails",
        "phonenumbers",
        "ims",
        "photos",
        "addresses",
        "entitlements",
        "roles",
        "x509certificates",
        "members",
        "groups",
        "rights",
    }
)
"""Attributes (lower-cased) a PATCH ``add`` appends to rather than replaces."""

READ_ONLY = frozenset({"id", "meta", "groups"})
"""Attributes (lower-cased) a client may not write."""
