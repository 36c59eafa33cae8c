"""PATCH (RFC 7644 §3.5.2) applied to a resource body held as a JSON dict.

Group members are not part of the body: operations on ``members`` go to a ``MemberEditor`` so that a
group of ten thousand members is edited row by row instead of being rewritten.
"""

from __future__ import annotations

from typing import Any, Protocol

from scim2_models import Path
from scim2_models.exceptions import SCIMException
from scim2_models.path import (
    AttrPath,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)

from ._errors import invalid_filter, invalid_path, invalid_syntax, invalid_value, mutability, no_target
from ._profile import MULTI_VALUED, PATCH_OP_SCHEMA, READ_ONLY, ResourceRules

_CANONICAL_NAMES = {
    name.lower(): name
    for name in [
        "schemas",
        "externalId",
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "password",
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509Certificates",
        "members",
        "formatted",
        "familyName",
        "givenName",
        "middleName",
        "honorificPrefix",
        "honorificSuffix",
        "value",
        "display",
        "type",
        "primary",
        "$ref",
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
        "employeeNumber",
        "costCenter",
        "organization",
        "division",
        "department",
        "manager",
        "container",
        "user",
        "group",
        "rights",
        "parent",
        "description",
        "privilegedData",
    ]
}


_CANONICAL_SPELLINGS = frozenset(_CANONICAL_NAMES.values())


def canonical_name(name: str) -> str:
    """The RFC spelling of a known attribute name (attribute names are case-insensitive)."""
    return _CANONICAL_NAMES.get(name.lower(), name)


def canonicalize(value: Any) -> Any:
    """Respell the keys of known attributes, so stored bodies and filters agree on case."""
    if isinstance(value, dict):
        respelled = {}
        for key, item in value.items():
            spelling = key
            if key not in _CANONICAL_SPELLINGS and key[:4].lower() != "urn:":
                spelling = _CANONICAL_NAMES.get(key.lower(), key)
            respelled[spelling] = canonicalize(item) if isinstance(item, dict | list) else item
        return respelled
    if isinstance(value, list):
        return [canonicalize(item) if isinstance(item, dict | list) else item for item in value]
    return value


def find_key(container: dict[str, Any], name: str) -> str | None:
    """The key of ``container`` that names ``name``, compared case-insensitively."""
    if name in container:
        return name
    lowered = name.lower()
    return next((key for key in container if key.lower() == lowered), None)


class MemberEditor(Protocol):
    """Edits the members of one group inside the PATCH's transaction."""

    def add(self, members: dict[str, str | None]) -> None:
        """Add members (user id -> the ``display`` the client gave, if any).

        Raises a 400 invalidValue ScimError for an id that is not a user.
        """

    def remove(self, user_ids: list[str]) -> int:
        """Remove members; returns how many were members."""

    def clear(self) -> int:
        """Remove every member; returns how many there were."""


def read_operations(request_body: Any) -> list[dict[str, Any]]:
    """The operations of a PatchOp request body, refused with 400 when malformed."""
    if not isinstance(request_body, dict):
        raise invalid_syntax("a PATCH body must be a PatchOp object")
    schemas = request_body.get("schemas")
    if not isinstance(schemas, list) or PATCH_OP_SCHEMA not in schemas:
        raise invalid_syntax(f"a PATCH body must declare the schema {PATCH_OP_SCHEMA}")
    key = find_key(request_body, "Operations")
    operations = request_body.get(key) if key else None
    if not isinstance(operations, list) or not operations:
        raise invalid_syntax("a PATCH body needs a non-empty Operations list")
    if not all(isinstance(operation, dict) for operation in operations):
        raise invalid_syntax("every PATCH operation must be an object")
    return operations


def apply_patch(
    rules: ResourceRules,
    body: dict[str, Any],
    operations: list[dict[str, Any]],
    members: MemberEditor | None,
) -> dict[str, Any]:
    """``body`` with ``operations`` applied in order (changed in place, and returned).

    On an error ``body`` may be half-patched: pass a copy to keep the original.
    """
    patched = body
    for operation in operations:
        op = _field(operation, "op")
        if not isinstance(op, str) or op.lower() not in ("add", "replace", "remove"):
            raise invalid_syntax(f"unknown PATCH op {op!r}")
        op = op.lower()
        path = _field(operation, "path")
        value = canonicalize(_field(operation, "value"))
        if path is None or path == "":
            if op == "remove":
                raise no_target("a remove operation needs a path")
            if not isinstance(value, dict):
                raise invalid_value(f"an {op} operation without a path needs an object value")
            for name, item in value.items():
                _apply(rules, patched, op, name, item, members=members)
        elif isinstance(path, str):
            _apply(rules, patched, op, path, value, members=members)
        else:
            raise invalid_path("a PATCH path must be a string")
    return patched


def _field(operation: dict[str, Any], name: str) -> Any:
    key = find_key(operation, name)
    return operation.get(key) if key is not None else None


def _apply(
    rules: ResourceRules,
    body: dict[str, Any],
    op: str,
    path_text: str,
    value: Any,
    *,
    members: MemberEditor | None,
) -> None:
    extension = next((ext for ext in rules.extensions if ext.lower() == path_text.lower()), None)
    if extension is not None:
        _apply_to_extension(body, op, extension, value)
        return
    try:
        node = Path(path_text).ast
    except (SCIMException, ValueError) as exc:
        raise invalid_path(f"the PATCH path is not valid: {exc}") from None
    if isinstance(node, ValuePath):
        container = _container(rules, body, node.attr_path, create=op != "remove")
        _apply_value_path(rules, container, op, node, value, members=members)
    elif isinstance(node, AttrPath):
        container = _container(rules, body, node, create=op != "remove")
        _apply_attr_path(rules, container, op, node, value, members=members)
    else:
        raise invalid_path("the PATCH path names no attribute")
    _drop_empty_extensions(rules, body)


def _apply_to_extension(body: dict[str, Any], op: str, extension: str, value: Any) -> None:
    if op == "remove":
        body.pop(extension, None)
        return
    if not isinstance(value, dict):
        raise invalid_value(f"the value of {extension} must be an object")
    target = body.setdefault(extension, {})
    target.update(value)


def _container(rules: ResourceRules, body: dict[str, Any], path: AttrPath, *, create: bool) -> dict[str, Any] | None:
    if path.uri is None or path.uri.lower() == rules.schema.lower():
        return body
    extension = next((ext for ext in rules.extensions if ext.lower() == path.uri.lower()), None)
    if extension is None:
        raise invalid_path(f"{rules.endpoint} has no schema {path.uri}")
    existing = body.get(extension)
    if isinstance(existing, dict):
        return existing
    if not create:
        return None
    body[extension] = {}
    return body[extension]  # type: ignore[no-any-return]


def _drop_empty_extensions(rules: ResourceRules, body: dict[str, Any]) -> None:
    for extension in rules.extensions:
        if body.get(extension) == {}:
            del body[extension]


def _check_writable(rules: ResourceRules, attribute: str, members: MemberEditor | None) -> None:
    lowered = attribute.lower()
    if lowered in READ_ONLY:
        raise mutability(f"{attribute} is read-only")
    if lowered == "schemas":
        raise mutability("schemas cannot be patched")
    if lowered == "members" and members is None:
        raise invalid_path(f"{rules.endpoint} have no members")


def _apply_attr_path(
    rules: ResourceRules,
    container: dict[str, Any] | None,
    op: str,
    path: AttrPath,
    value: Any,
    *,
    members: MemberEditor | None,
) -> None:
    _check_writable(rules, path.attr, members)
    if path.attr.lower() == "members" and members is not None:
        _apply_members(op, path, value, members)
        return
    if container is None:  # a remove inside an extension the resource does not have
        return
    key = find_key(container, path.attr) or canonical_name(path.attr)
    if path.sub_attr is not None:
        parent = container.get(key)
        if op == "remove":
            if isinstance(parent, dict):
                sub_key = find_key(parent, path.sub_attr)
                if sub_key is not None:
                    del parent[sub_key]
                if not parent:
                    del container[key]
            return
        if parent is None:
            parent = container[key] = {}
        if not isinstance(parent, dict):
            raise invalid_path(f"{path} needs a value filter: {path.attr} is multi-valued")
        parent[find_key(parent, path.sub_attr) or canonical_name(path.sub_attr)] = value
        return
    if op == "remove":
        container.pop(key, None)
        return
    existing = container.get(key)
    multi_valued = path.attr.lower() in MULTI_VALUED or isinstance(existing, list)
    if multi_valued:
        items = value if isinstance(value, list) else [value]
        if op == "add" and isinstance(existing, list):
            container[key] = existing + [item for item in items if item not in existing]
        else:
            container[key] = list(items)
    elif isinstance(value, dict) and isinstance(existing, dict):
        existing.update(value)
    else:
        container[key] = value


def _apply_members(op: str, path: AttrPath, value: Any, members: MemberEditor) -> None:
    if path.sub_attr is not None:
        raise invalid_path("members can only be patched as a whole or with a value filter")
    given = None if value is None else read_members(value)
    if op == "add":
        if not given:
            raise invalid_value("add members needs a list of {'value': id}")
        members.add(given)
    elif op == "replace":
        members.clear()
        if given:
            members.add(given)
    elif given is None:
        members.clear()
    elif members.remove(list(given)) == 0:
        raise no_target("none of the given users is a member of the group")


def read_members(value: Any) -> dict[str, str | None]:
    """Member user ids -> their ``display`` (if given), from a ``members`` value (list or one)."""
    items = value if isinstance(value, list) else [value]
    members: dict[str, str | None] = {}
    for item in items:
        value_key = find_key(item, "value") if isinstance(item, dict) else None
        member_id = item[value_key] if value_key is not None else None
        if not isinstance(member_id, str) or not member_id:
            raise invalid_value("every member needs a string 'value' naming a user id")
        display_key = find_key(item, "display")
        display = item[display_key] if display_key is not None else None
        members[member_id] = display if isinstance(display, str) else None
    return members


def _member_filter_ids(node: FilterNode) -> list[str]:
    """The ids named by ``value eq "id"`` terms, possibly joined by ``or``."""
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_:
        return [member_id for term in node.terms for member_id in _member_filter_ids(term)]
    if (
        isinstance(node, Comparison)
        and node.attr_path.attr.lower() == "value"
        and node.attr_path.sub_attr is None
        and node.op.value == "eq"
        and isinstance(node.value, str)
    ):
        return [node.value]
    raise invalid_filter('members can only be selected with value eq "id" (joined by or)')


def _apply_value_path(
    rules: ResourceRules,
    container: dict[str, Any] | None,
    op: str,
    path: ValuePath,
    value: Any,
    *,
    members: MemberEditor | None,
) -> None:
    attribute = path.attr_path.attr
    _check_writable(rules, attribute, members)
    if attribute.lower() == "members" and members is not None:
        if op != "remove" or path.sub_attr is not None:
            raise invalid_path("members[...] paths are only supported by remove")
        if members.remove(_member_filter_ids(path.val_filter)) == 0:
            raise no_target("no member matches the filter")
        return
    key = None if container is None else find_key(container, attribute)
    items = container.get(key) if container is not None and key is not None else None
    items = items if isinstance(items, list) else []
    matches = [item for item in items if isinstance(item, dict) and _matches(item, path.val_filter)]
    if op == "remove":
        if not matches:
            raise no_target(f"no value of {attribute} matches the filter")
        assert container is not None
        assert key is not None
        if path.sub_attr is not None:
            for item in matches:
                sub_key = find_key(item, path.sub_attr)
                if sub_key is not None:
                    del item[sub_key]
        else:
            container[key] = [item for item in items if item not in matches]
        if not container[key]:
            del container[key]
        return
    assert container is not None
    if not matches:
        if op == "replace":
            raise no_target(f"no value of {attribute} matches the filter")
        container[key or canonical_name(attribute)] = [*items, _new_item(path, value)]
        return
    for item in matches:
        if path.sub_attr is not None:
            item[find_key(item, path.sub_attr) or canonical_name(path.sub_attr)] = value
        elif isinstance(value, dict):
            if op == "replace":
                item.clear()
            item.update(value)
        else:
            raise invalid_value(f"the value for {path} must be an object")


def _new_item(path: ValuePath, value: Any) -> dict[str, Any]:
    """The value an ``add`` through a value filter creates when nothing matches (as Entra expects)."""
    item = _equalities(path.val_filter)
    if path.sub_attr is not None:
        item[canonical_name(path.sub_attr)] = value
    elif isinstance(value, dict):
        item.update(value)
    else:
        raise invalid_value(f"the value for {path} must be an object")
    return item


def _equalities(node: FilterNode) -> dict[str, Any]:
    if isinstance(node, Comparison) and node.op.value == "eq" and node.attr_path.sub_attr is None:
        return {canonical_name(node.attr_path.attr): node.value}
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_:
        merged: dict[str, Any] = {}
        for term in node.terms:
            merged.update(_equalities(term))
        return merged
    raise no_target("no value matches the filter, and the filter does not say what to add")


def _matches(item: dict[str, Any], node: FilterNode) -> bool:
    if isinstance(node, LogicalExpr):
        results = (_matches(item, term) for term in node.terms)
        return all(results) if node.op == LogicalOperator.and_ else any(results)
    if isinstance(node, Not):
        return not _matches(item, node.expr)
    if isinstance(node, Present):
        key = find_key(item, node.attr_path.attr)
        return key is not None and item[key] not in (None, "", [], {})
    if isinstance(node, Comparison):
        key = find_key(item, node.attr_path.attr)
        return _compare(item.get(key) if key is not None else None, node.op.value, node.value)
    raise invalid_filter(f"unsupported expression in a value filter: {type(node).__name__}")


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        actual, expected = actual.casefold(), expected.casefold()
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if actual is None:
        return False
    if isinstance(actual, str) and isinstance(expected, str):
        if op == "co":
            return expected in actual
        if op == "sw":
            return actual.startswith(expected)
        if op == "ew":
            return actual.endswith(expected)
    try:
        if op == "gt":
            return bool(actual > expected)
        if op == "ge":
            return bool(actual >= expected)
        if op == "lt":
            return bool(actual < expected)
        if op == "le":
            return bool(actual <= expected)
    except TypeError:
        return False
    return False
