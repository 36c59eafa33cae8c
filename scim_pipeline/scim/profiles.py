"""Service-provider profiles: per resource type, the endpoint, the operations and the filters allowed.

``DELINEA`` (the default) encodes the Delinea SCIM Cloud Connector's published rules (the seed's
filter matrix, Groups without DELETE, Containers create and search only, ContainerPermissions
add/delete/search with a required filter, PrivilegedData without create). ``RFC7644`` is any
standard service provider: Users and Groups, every operation, any filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from .errors import ConfigurationError, OperationRefused

__all__ = [
    "DELINEA",
    "LITERAL_UNSAFE",
    "PROFILES",
    "RFC7644",
    "FilterRules",
    "Operation",
    "Profile",
    "ResourceTypeRules",
    "get_profile",
]


class Operation(StrEnum):
    """What a client can do to a resource type."""

    GET = "get"
    SEARCH = "search"
    CREATE = "create"
    REPLACE = "replace"
    PATCH = "patch"
    DELETE = "delete"


ALL_OPERATIONS = frozenset(Operation)


def _operator_order(op: str) -> tuple[bool, str]:
    return (op != "eq", op)  # "eq/co", as Delinea writes it


@dataclass(frozen=True)
class FilterRules:
    """Which filters a resource type accepts.

    ``allowed`` maps an attribute path (compared case-insensitively) to the operators it accepts;
    only ``and`` may join comparisons. ``any_filter`` lifts every restriction (RFC 7644 servers).
    ``required`` means the resource type cannot be listed without a filter.
    """

    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    required: bool = False
    any_filter: bool = False

    def allows(self, attribute: str, operator: str) -> bool:
        """Whether ``attribute operator "value"`` passes (case-insensitive)."""
        if self.any_filter:
            return True
        ops = {name.lower(): value for name, value in self.allowed.items()}.get(attribute.lower())
        return ops is not None and operator.lower() in ops

    def describe(self) -> str:
        """The rule in words, for error messages: ``userName eq/co, displayName eq/co``."""
        if self.any_filter:
            return "any RFC 7644 filter"
        pairs = ", ".join(f"{name} {'/'.join(sorted(ops, key=_operator_order))}" for name, ops in self.allowed.items())
        return f"{pairs}, joined by 'and'" if pairs else "no filter"


@dataclass(frozen=True)
class ResourceTypeRules:
    """What a profile allows on one resource type."""

    name: str
    endpoint: str
    schema: str
    operations: frozenset[Operation]
    filters: FilterRules
    match_attribute: str | None = None
    """The attribute a lost or conflicting create is looked up by (``None``: cannot be)."""


LITERAL_UNSAFE = frozenset('"\\')
"""Characters some servers cannot match in a filter value, escaped or not: they read the literal up to
the next quote without decoding escapes (control characters are always treated as unsafe too)."""


@dataclass(frozen=True)
class Profile:
    """A service provider's rules, per resource type (keyed by endpoint name, e.g. ``"Users"``)."""

    name: str
    description: str
    resource_types: Mapping[str, ResourceTypeRules]
    filter_unsafe_characters: frozenset[str] = LITERAL_UNSAFE
    """Characters never sent in a filter value: a value holding one is looked up by a safe fragment
    and matched exactly on the client (see ``filters.lookup_filter``)."""

    def rules(self, resource_type: str) -> ResourceTypeRules:
        """The rules of a resource type; :class:`OperationRefused` if the profile has none."""
        try:
            return self.resource_types[resource_type]
        except KeyError:
            known = ", ".join(self.resource_types)
            raise OperationRefused(
                f"profile {self.name!r} has no resource type {resource_type!r} (it knows {known})"
            ) from None

    def require(self, resource_type: str, operation: Operation) -> ResourceTypeRules:
        """Refuse, before any request, an operation the profile does not allow."""
        rules = self.rules(resource_type)
        if operation not in rules.operations:
            allowed = ", ".join(op.value for op in Operation if op in rules.operations)
            raise OperationRefused(
                f"profile {self.name!r} does not allow {operation.value} on {resource_type} (allowed: {allowed})"
            )
        return rules


def _pairs(**attributes: str) -> Mapping[str, frozenset[str]]:
    return MappingProxyType({name.replace("__", "."): frozenset(ops.split("/")) for name, ops in attributes.items()})


_USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
_GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
_PAM = "urn:ietf:params:scim:schemas:pam:1.0"
_O = Operation

_DELINEA_PERMISSION_FILTERS = _pairs(user__display="eq/co", user__value="eq", group__display="eq/co", group__value="eq")

DELINEA = Profile(
    name="delinea",
    description="Delinea Platform SCIM Cloud Connector (published filter matrix, no /Bulk)",
    resource_types=MappingProxyType(
        {
            "Users": ResourceTypeRules(
                name="Users",
                endpoint="/Users",
                schema=_USER_SCHEMA,
                operations=ALL_OPERATIONS,
                filters=FilterRules(_pairs(userName="eq/co", displayName="eq/co")),
                match_attribute="userName",
            ),
            "Groups": ResourceTypeRules(
                name="Groups",
                endpoint="/Groups",
                schema=_GROUP_SCHEMA,
                operations=ALL_OPERATIONS - {_O.DELETE},
                filters=FilterRules(_pairs(userName="eq/co", displayName="eq/co")),
                match_attribute="displayName",
            ),
            "Containers": ResourceTypeRules(
                name="Containers",
                endpoint="/Containers",
                schema=f"{_PAM}:Container",
                operations=frozenset({_O.CREATE, _O.SEARCH, _O.GET}),
                filters=FilterRules(_pairs(name="eq/co", displayName="eq/co")),
                match_attribute="name",
            ),
            "ContainerPermissions": ResourceTypeRules(
                name="ContainerPermissions",
                endpoint="/ContainerPermissions",
                schema=f"{_PAM}:ContainerPermission",
                operations=frozenset({_O.CREATE, _O.DELETE, _O.SEARCH}),
                filters=FilterRules(
                    MappingProxyType({"container.value": frozenset({"eq"}), **_DELINEA_PERMISSION_FILTERS}),
                    required=True,
                ),
            ),
            "PrivilegedData": ResourceTypeRules(
                name="PrivilegedData",
                endpoint="/PrivilegedData",
                schema=f"{_PAM}:PrivilegedData",
                operations=ALL_OPERATIONS - {_O.CREATE},
                filters=FilterRules(
                    MappingProxyType({"privilegedData.value": frozenset({"eq"}), **_DELINEA_PERMISSION_FILTERS})
                ),
            ),
        }
    ),
)

RFC7644 = Profile(
    name="rfc7644",
    description="Any RFC 7644 service provider: Users and Groups, every operation, any filter",
    resource_types=MappingProxyType(
        {
            "Users": ResourceTypeRules(
                name="Users",
                endpoint="/Users",
                schema=_USER_SCHEMA,
                operations=ALL_OPERATIONS,
                filters=FilterRules(any_filter=True),
                match_attribute="userName",
            ),
            "Groups": ResourceTypeRules(
                name="Groups",
                endpoint="/Groups",
                schema=_GROUP_SCHEMA,
                operations=ALL_OPERATIONS,
                filters=FilterRules(any_filter=True),
                match_attribute="displayName",
            ),
        }
    ),
)

PROFILES: Mapping[str, Profile] = MappingProxyType({p.name: p for p in (DELINEA, RFC7644)})


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name`` (case-insensitive); :class:`ConfigurationError` if unknown."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        valid = ", ".join(PROFILES)
        raise ConfigurationError(f"SCIM_PROFILE (profile): unknown profile {name!r}; valid profiles: {valid}") from None
