"""Attribute-path values ⇄ SCIM bodies and PATCH operations.

A roster row (and a managed row in the state store) holds one value per SCIM attribute path, e.g. ``userName``,
``name.givenName``, ``emails[type eq "work"].value`` or
``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``. This module turns such a mapping into
the JSON body of a create, turns a difference between two mappings into RFC 7644 §3.5.2 PATCH operations (never a
PUT: a full replace that omits ``active`` can suspend the user on Delinea), and reads a target resource back into
attribute-path values (adoption, drift).

The enterprise ``manager`` attribute holds the manager's *matching key*; it becomes ``{"value": <SCIM id>}`` when
the manager's SCIM id is known, and is left out otherwise (the state then records it as not yet written, so the next
cycle retries it).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = [
    "CORE_GROUP_SCHEMA",
    "CORE_USER_SCHEMA",
    "ENTERPRISE_USER_SCHEMA",
    "MANAGER_PATH",
    "PRIMARY_EMAIL",
    "SINGLE_EMAIL",
    "AttributePath",
    "group_body",
    "is_missing",
    "parse_path",
    "patch_operations",
    "resource_attrs",
    "user_body",
]

CORE_USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MANAGER_PATH = f"{ENTERPRISE_USER_SCHEMA}:manager"

PRIMARY_EMAIL = "emails[primary eq true].value"
"""The ``plain`` e-mail form: a multi-valued ``emails`` of value and primary, no ``type``."""
SINGLE_EMAIL = "emails.value"
"""The ``single`` e-mail form: ``emails`` holds exactly one address, marked primary (written whole)."""
_EMAIL_FORMS = {PRIMARY_EMAIL.lower(): "plain", SINGLE_EMAIL.lower(): "single"}

_FILTERED = re.compile(r'^(?P<attr>[A-Za-z][\w$-]*)\[type eq "(?P<type>[^"]*)"\]\.(?P<sub>[A-Za-z][\w$-]*)$')

ManagerResolver = Callable[[str], str | None]


@dataclass(frozen=True)
class AttributePath:
    """A parsed attribute path.

    ``schema`` is ``None`` for the core schema, else the extension URN; ``attribute`` the top-level name;
    ``sub`` a sub-attribute (``name.givenName``, or the ``value`` of a typed multi-valued entry);
    ``type_value`` the ``type eq`` selector of a multi-valued attribute (``emails[type eq "work"]``).
    """

    text: str
    schema: str | None
    attribute: str
    sub: str | None = None
    type_value: str | None = None
    email_form: str | None = None
    """``plain`` or ``single`` for the untyped e-mail paths (:data:`PRIMARY_EMAIL`, :data:`SINGLE_EMAIL`)."""

    @property
    def is_manager(self) -> bool:
        return self.schema == ENTERPRISE_USER_SCHEMA and self.attribute == "manager"


@functools.lru_cache(maxsize=1024)
def parse_path(path: str) -> AttributePath:
    """Parse an attribute path as the mapping writes it. Raises ``ValueError`` for a form it cannot express."""
    schema: str | None = None
    rest = path
    email_form = _EMAIL_FORMS.get(path.lower())
    if email_form is not None:
        return AttributePath(path, None, "emails", sub="value", email_form=email_form)
    if path.lower().startswith("urn:"):
        schema, _, rest = path.rpartition(":")
        if not schema or not rest:
            raise ValueError(f"attribute path {path!r} has no attribute after its schema URN")
    match = _FILTERED.match(rest)
    if match:
        return AttributePath(path, schema, match["attr"], sub=match["sub"], type_value=match["type"])
    if "[" in rest or "]" in rest:
        raise ValueError(f'attribute path {path!r}: only [type eq "…"] selectors are supported')
    attribute, _, sub = rest.partition(".")
    return AttributePath(path, schema, attribute, sub=sub or None)


def is_missing(value: Any) -> bool:
    """Whether a value counts as absent: ``None``, ``<NA>``, NaN or the empty string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value == ""
    return value is pd.NA


def _plain(value: Any) -> Any:
    # numpy/pandas scalars become JSON-native values.
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


@functools.lru_cache(maxsize=1024)
def _placement(path: str) -> tuple[str | None, str, str | None, str | None, bool]:
    """Where a path's value goes: schema, attribute, sub-attribute, `type eq` value, whether it is the manager."""
    parsed = parse_path(path)
    return parsed.schema, parsed.attribute, parsed.sub, parsed.type_value, parsed.is_manager


def _set_value(
    body: dict[str, Any],
    path: str,
    value: Any,
    resolve_manager: ManagerResolver | None,
    extensions: list[str] | None = None,
) -> bool:
    """Place one value into a body; False when it was left out (an unresolved manager). The URN of each extension
    schema container it creates is appended to `extensions`."""
    schema, attribute, sub, type_value, is_manager = _placement(path)
    email_form = parse_path(path).email_form
    if email_form is not None:
        emails = body.get("emails")
        primary = next((e for e in emails if e.get("primary")), None) if email_form == "plain" and emails else None
        if primary is not None:
            primary["value"] = value
        else:
            body["emails"] = [{"value": value, "primary": True}]
        return True
    if is_manager:
        manager_id = resolve_manager(str(value)) if resolve_manager else None
        if manager_id is None:
            return False
        value = {"value": manager_id}
    container: dict[str, Any] | None = body if schema is None else body.get(schema)
    if container is None:
        assert schema is not None
        container = body[schema] = {}
        if extensions is not None:
            extensions.append(schema)
    if type_value is not None:
        entries: list[dict[str, Any]] = container.setdefault(attribute, [])
        entry = next((e for e in entries if e.get("type") == type_value), None)
        if entry is None:
            entry = {"type": type_value}
            if not entries:
                entry["primary"] = True
            entries.append(entry)
        entry[sub or "value"] = value
        return True
    if sub is not None:
        container.setdefault(attribute, {})[sub] = value
        return True
    container[attribute] = value
    return True


def user_body(
    attrs: Mapping[str, Any], *, resolve_manager: ManagerResolver | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SCIM User body of a create, and the attribute values it actually carries.

    Missing values are left out; the enterprise schema URN is listed only when an enterprise attribute is set.
    An unresolvable manager is left out of both results, so the state records it as not yet written.
    """
    body: dict[str, Any] = {"schemas": [CORE_USER_SCHEMA]}
    written: dict[str, Any] = {}
    # Extension containers in the order they were created: the body's keys that are schema URNs.
    extensions: list[str] = []
    for path, raw in attrs.items():
        # Most values are text: test those directly (a first onboarding builds a body per roster user).
        if raw.__class__ is str:
            if not raw:
                continue
            value = raw
        elif is_missing(raw):
            continue
        else:
            value = _plain(raw)
        if _set_value(body, path, value, resolve_manager, extensions):
            written[path] = value
    schemas = body["schemas"]
    if ENTERPRISE_USER_SCHEMA in body:
        schemas.append(ENTERPRISE_USER_SCHEMA)
    for schema in extensions:
        if schema not in schemas:
            schemas.append(schema)
    return body, written


def group_body(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The SCIM Group body of a create (no members: memberships are PATCHed separately, in chunks)."""
    body: dict[str, Any] = {"schemas": [CORE_GROUP_SCHEMA]}
    for path, raw in attrs.items():
        if is_missing(raw) or path == "members":
            continue
        _set_value(body, path, _plain(raw), None)
    return body


def _op_path(parsed: AttributePath) -> str:
    if parsed.schema is None:
        return parsed.text
    return f"{parsed.schema}:{parsed.attribute}" + (f".{parsed.sub}" if parsed.sub else "")


def patch_operations(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    paths: Iterable[str] | None = None,
    resolve_manager: ManagerResolver | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """PATCH operations turning ``old`` into ``new`` over ``paths`` (default: the paths of ``new``).

    Returns the operations and the attribute values written after they succeed (``old`` updated with them). A
    value that became empty is removed; a changed one replaced; a new typed multi-valued entry (a first work
    e-mail) is added, since a ``replace`` whose filter matches nothing answers ``noTarget``. A manager whose SCIM
    id is unknown is skipped and stays "not yet written".
    """
    operations: list[dict[str, Any]] = []
    written: dict[str, Any] = {k: v for k, v in old.items() if not is_missing(v)}
    for path in paths if paths is not None else new.keys():
        before = old.get(path)
        after = new.get(path)
        before_missing, after_missing = is_missing(before), is_missing(after)
        if before_missing and after_missing:
            continue
        after_value = None if after_missing else _plain(after)
        if not before_missing and not after_missing and _plain(before) == after_value:
            continue
        parsed = parse_path(path)
        if parsed.email_form is not None:
            operations.append(_email_operation(parsed.email_form, before_missing, None if after_missing else after))
            if after_missing:
                written.pop(path, None)
            else:
                written[path] = after_value
            continue
        if after_missing:
            remove_path = (
                f'{parsed.attribute}[type eq "{parsed.type_value}"]'
                if parsed.type_value is not None and parsed.schema is None
                else _op_path(parsed)
            )
            operations.append({"op": "remove", "path": remove_path})
            written.pop(path, None)
            continue
        value: Any = after_value
        if parsed.is_manager:
            manager_id = resolve_manager(str(after_value)) if resolve_manager else None
            if manager_id is None:
                continue
            value = {"value": manager_id}
        if parsed.type_value is not None and before_missing:
            entry = {"type": parsed.type_value, parsed.sub or "value": value}
            target = parsed.attribute if parsed.schema is None else f"{parsed.schema}:{parsed.attribute}"
            operations.append({"op": "add", "path": target, "value": [entry]})
        else:
            operations.append({"op": "replace", "path": _op_path(parsed), "value": value})
        written[path] = after_value
    return operations, written


def _email_operation(form: str, before_missing: bool, value: Any) -> dict[str, Any]:
    """The PATCH operation of an untyped e-mail: ``plain`` changes the primary entry (others kept), ``single``
    writes ``emails`` whole."""
    entry = [{"value": _plain(value), "primary": True}]
    if value is None:
        return {"op": "remove", "path": "emails[primary eq true]" if form == "plain" else "emails"}
    if form == "single":
        return {"op": "replace", "path": "emails", "value": entry}
    if before_missing:
        return {"op": "add", "path": "emails", "value": entry}
    return {"op": "replace", "path": PRIMARY_EMAIL, "value": _plain(value)}


def _read_value(resource: Mapping[str, Any], parsed: AttributePath) -> Any:
    if parsed.email_form is not None:
        entries = {str(k).lower(): v for k, v in resource.items()}.get("emails")
        if not isinstance(entries, list):
            return None
        entries = [e for e in entries if isinstance(e, Mapping)]
        chosen = next((e for e in entries if e.get("primary") is True), None)
        if chosen is None and parsed.email_form == "single" and entries:
            chosen = entries[0]
        return chosen.get("value") if chosen is not None else None
    container: Any = resource if parsed.schema is None else resource.get(parsed.schema)
    if not isinstance(container, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in container.items()}
    value = lowered.get(parsed.attribute.lower())
    if parsed.type_value is not None:
        if not isinstance(value, list):
            return None
        for entry in value:
            if isinstance(entry, Mapping) and entry.get("type") == parsed.type_value:
                return entry.get(parsed.sub or "value")
        return None
    if parsed.sub is not None:
        if not isinstance(value, Mapping):
            return None
        return {str(k).lower(): v for k, v in value.items()}.get(parsed.sub.lower())
    return value


def resource_attrs(
    resource: Mapping[str, Any],
    paths: Iterable[str],
    *,
    manager_key: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """Read a target resource back into attribute-path values (only the ``paths`` asked for, only those set).

    ``manager_key`` maps a manager's SCIM id back to its matching key; an unknown manager id is left out.
    """
    attrs: dict[str, Any] = {}
    for path in paths:
        parsed = parse_path(path)
        value = _read_value(resource, parsed)
        if parsed.is_manager:
            manager_id = value.get("value") if isinstance(value, Mapping) else None
            value = manager_key(str(manager_id)) if manager_id and manager_key else None
        if value is None or isinstance(value, Mapping | list) or is_missing(value):
            continue
        attrs[path] = value
    return attrs
