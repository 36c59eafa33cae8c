"""PATCH in a form the target accepts — and a PUT when it accepts none.

Some targets refuse a PATCH form outright — 501 on attribute paths, 501 on removing
``members[value eq "id"]``, 405 on every PATCH — or answer 400 ``invalidPath`` / ``noTarget`` to a path that is
valid. A refused form falls back to another one that says the same thing:

* attribute changes by path → PUT of the resource: GET it, apply the operations locally
  (:func:`apply_operations`, on the resource as the target sent it), PUT the result back; attributes the sync does
  not manage and attributes no model knows are kept as they were;
* member removal by filter ⇄ member removal by a value list
  (``{"op": "remove", "path": "members", "value": [{"value": "id"}, …]}``);
* any member change of a group whose every PATCH is refused (501 or 405) → GET the group, add and remove our
  members locally (members the sync does not manage are kept), PUT it back — only up to
  ``SCIM_GROUP_PUT_MAX_MEMBERS`` members.

A PUT is sent with ``If-Match`` when the target gave the resource a version (``ETag`` header or ``meta.version``);
a 412 (someone changed it since it was read) reads it again and retries, ``SCIM_PRECONDITION_RETRIES`` times.

The form that worked is remembered in the client's :class:`~.target_quirks.TargetQuirks`, so the
next call goes straight to it. A 501 or 405 proves a form refused at once; a 400 does so only once another
form has worked. A member removal by filter answered ``noTarget`` is already done (the member is not
there) and never retried as a value list: a server that ignores the value of ``remove members``
removes every member (RFC 7644 §3.5.2.2). A value-list removal refused (400 ``invalidValue``,
``invalidPath``, ``noTarget`` or 501) is retried by filter, which removes only what it names.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scim2_models import Path
from scim2_models.exceptions import SCIMException

from ._port import ScimPort
from .errors import FallbackRefused, ScimHTTPError, ScimPreconditionFailed
from .filters import literal
from .profiles import Operation
from .results import ScimResult
from .target_quirks import PatchForm, PatchKind

__all__ = ["apply_operations", "classify", "patch_with_fallback", "refuses_form", "to_form"]

logger = logging.getLogger("scim_pipeline.scim")

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_REFUSING_SCIM_TYPES: dict[PatchForm, frozenset[str | None]] = {
    PatchForm.ATTRIBUTE_PATH: frozenset({"invalidPath", "noTarget", "invalidSyntax", None}),
    PatchForm.MEMBER_FILTER: frozenset({"invalidPath"}),
    PatchForm.MEMBER_VALUE_LIST: frozenset({"invalidPath", "invalidValue", "noTarget"}),
    PatchForm.REPLACE: frozenset(),
    PatchForm.AS_GIVEN: frozenset(),
}
_REFUSED_METHOD = frozenset({405, 501})
"""Statuses that say "no PATCH like this here" whatever its content."""
_PUT_DROPS = frozenset({"id", "meta", "groups"})


def _field(operation: Mapping[str, Any], name: str) -> Any:
    return next((value for key, value in operation.items() if str(key).lower() == name), None)


def _member_ids(operation: Mapping[str, Any]) -> list[str] | None:
    """The member ids one ``remove`` operation names (by filter or by value list); ``None`` otherwise."""
    if str(_field(operation, "op") or "").lower() != "remove":
        return None
    path = _field(operation, "path")
    if not isinstance(path, str):
        return None
    if path.strip().lower() == "members":
        value = _field(operation, "value")
        items = value if isinstance(value, list) else None
        ids = [_field(item, "value") for item in items or [] if isinstance(item, Mapping)]
        return [str(i) for i in ids] if items and all(isinstance(i, str) for i in ids) else None
    try:
        node = Path(path).ast
    except (SCIMException, ValueError):
        return None
    value_filter = getattr(node, "val_filter", None)
    attribute = getattr(getattr(node, "attr_path", None), "attr", "")
    if attribute.lower() != "members" or getattr(node, "sub_attr", None) is not None:
        return None
    comparison_path = getattr(value_filter, "attr_path", None)
    op = getattr(getattr(value_filter, "op", None), "value", None)
    member = getattr(value_filter, "value", None)
    if getattr(comparison_path, "attr", "").lower() != "value" or op != "eq" or not isinstance(member, str):
        return None
    return [member]


def classify(operations: Sequence[Mapping[str, Any]]) -> tuple[PatchKind, PatchForm] | None:
    """The kind and form of a PATCH whose form may be changed; ``None`` for any other (member adds,
    mixed operations, operations without a path), which is sent as given."""
    if not operations:
        return None
    removals = [_member_ids(operation) for operation in operations]
    if all(ids is not None for ids in removals):
        by_list = any(str(_field(op, "path")).strip().lower() == "members" for op in operations)
        return PatchKind.MEMBER_REMOVAL, PatchForm.MEMBER_VALUE_LIST if by_list else PatchForm.MEMBER_FILTER
    paths = [_field(operation, "path") for operation in operations]
    if all(isinstance(path, str) and path.strip() for path in paths) and not any(
        str(path).strip().lower().startswith("members") for path in paths
    ):
        return PatchKind.ATTRIBUTES, PatchForm.ATTRIBUTE_PATH
    return None


def to_form(operations: Sequence[Mapping[str, Any]], form: PatchForm) -> list[dict[str, Any]]:
    """A member removal rewritten in ``form`` (the attribute forms keep the operations as they are)."""
    if form not in (PatchForm.MEMBER_FILTER, PatchForm.MEMBER_VALUE_LIST):
        return [dict(operation) for operation in operations]
    ids = list(dict.fromkeys(i for operation in operations for i in _member_ids(operation) or []))
    if form is PatchForm.MEMBER_VALUE_LIST:
        return [{"op": "remove", "path": "members", "value": [{"value": i} for i in ids]}]
    return [{"op": "remove", "path": f"members[value eq {literal(i)}]"} for i in ids]


def refuses_form(error: ScimHTTPError, form: PatchForm) -> bool:
    """Whether an error may mean "not in this form": 501 or 405, or a 400 whose scimType says so for ``form``
    (``invalidPath`` / ``noTarget`` / ``invalidSyntax`` / none for an attribute path, only ``invalidPath`` for a
    member filter)."""
    return error.status in _REFUSED_METHOD or (error.status == 400 and error.scim_type in _REFUSING_SCIM_TYPES[form])


def _valid_paths(operations: Sequence[Mapping[str, Any]]) -> bool:
    for operation in operations:
        path = _field(operation, "path")
        if path is None:
            continue
        try:
            Path(str(path))
        except (SCIMException, ValueError):
            return False
    return True


_PATH = re.compile(
    r"^(?:(?P<urn>urn:[^\[\]]+):)?(?P<attr>[A-Za-z][\w$-]*)"
    r"(?:\[(?P<fattr>[A-Za-z][\w$-]*)\s+eq\s+(?P<fval>\"(?:[^\"\\]|\\.)*\"|true|false)\])?"
    r"(?:\.(?P<sub>[A-Za-z][\w$-]*))?$",
    re.IGNORECASE,
)


class _CannotApply(Exception):
    """An operation this client cannot apply locally (a path form it does not know)."""


def _key(mapping: Mapping[str, Any], name: str) -> str:
    """The key of ``mapping`` that ``name`` names (attribute names are case-insensitive), else ``name``."""
    return next((str(key) for key in mapping if str(key).lower() == name.lower()), name)


def _matches(entry: object, attribute: str, wanted: object) -> bool:
    if not isinstance(entry, Mapping):
        return False
    found = entry.get(_key(entry, attribute))
    if isinstance(wanted, str) and isinstance(found, str):
        return found.casefold() == wanted.casefold() if attribute.lower() != "value" else found == wanted
    return bool(found == wanted)


def _apply_one(resource: dict[str, Any], operation: Mapping[str, Any]) -> None:
    op = str(_field(operation, "op") or "").lower()
    path, value = _field(operation, "path"), copy.deepcopy(_field(operation, "value"))
    if op not in ("add", "replace", "remove"):
        raise _CannotApply(op)
    if path is None:
        if op == "remove" or not isinstance(value, Mapping):
            raise _CannotApply("a path-less operation without an object value")
        for name, item in value.items():
            _apply_one(resource, {"op": op, "path": str(name), "value": item})
        return
    parsed = _PATH.match(str(path).strip())
    if parsed is None:
        raise _CannotApply(str(path))
    container: dict[str, Any] = resource
    if parsed["urn"]:
        urn_key = _key(resource, parsed["urn"])
        if op == "remove" and not isinstance(resource.get(urn_key), dict):
            return
        container = resource.setdefault(urn_key, {})
        schemas = resource.setdefault("schemas", [])
        if isinstance(schemas, list) and parsed["urn"] not in schemas:
            schemas.append(parsed["urn"])
    attribute = _key(container, parsed["attr"])
    sub = parsed["sub"]
    if parsed["fattr"]:
        wanted = json.loads(parsed["fval"].lower() if parsed["fval"] in ("true", "false") else parsed["fval"])
        entries = container.get(attribute)
        entries = entries if isinstance(entries, list) else []
        chosen = [entry for entry in entries if _matches(entry, parsed["fattr"], wanted)]
        if op == "remove":
            if sub:
                for entry in chosen:
                    entry.pop(_key(entry, sub), None)
            else:
                container[attribute] = [entry for entry in entries if entry not in chosen]
            return
        if not chosen:  # nothing matched: the entry is made, so the change lands (RFC 7644 would say noTarget)
            chosen = [{parsed["fattr"]: wanted}]
            if not entries:
                chosen[0]["primary"] = True
            entries.append(chosen[0])
            container[attribute] = entries
        for entry in chosen:
            if sub:
                entry[_key(entry, sub)] = value
            elif isinstance(value, Mapping):
                entry.update(value)
            else:
                raise _CannotApply(str(path))
        return
    if op == "remove":
        if sub:
            inner = container.get(attribute)
            if isinstance(inner, dict):
                inner.pop(_key(inner, sub), None)
        else:
            container.pop(attribute, None)
        return
    if sub:
        inner = container.get(attribute)
        if not isinstance(inner, dict):
            inner = container[attribute] = {}
        inner[_key(inner, sub)] = value
        return
    current = container.get(attribute)
    if op == "add" and isinstance(value, list) and isinstance(current, list):
        container[attribute] = current + [item for item in value if item not in current]
    elif op == "add" and isinstance(value, Mapping) and isinstance(current, dict):
        current.update(value)
    else:
        container[attribute] = value


def apply_operations(resource: Mapping[str, Any], operations: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``resource`` with PATCH ``operations`` applied locally, as RFC 7644 §3.5.2 describes them, on the resource
    as the target sent it (so every attribute the operations do not name is kept, known to a model or not); its
    read-only ``id``, ``meta`` and ``groups`` left out, ready for a PUT. ``None`` when an operation uses a path
    form this client does not apply (only ``attr``, ``attr.sub``, ``urn:…:attr[.sub]`` and ``attr[x eq "v"][.sub]``
    are)."""
    body = copy.deepcopy(dict(resource))
    try:
        for operation in operations:
            _apply_one(body, operation)
    except (_CannotApply, ValueError):
        return None
    for name in list(body):
        if name.lower() in _PUT_DROPS:
            del body[name]
    return body


def _member_changes(operations: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]] | None:
    """``(added ids, removed ids)`` when every operation adds or removes group members; ``None`` otherwise."""
    added: list[str] = []
    removed: list[str] = []
    for operation in operations:
        ids = _member_ids(operation)
        if ids is not None:
            removed.extend(ids)
            continue
        op, path, value = _field(operation, "op"), _field(operation, "path"), _field(operation, "value")
        if str(op).lower() != "add" or str(path).strip().lower() != "members" or not isinstance(value, list):
            return None
        values = [_field(item, "value") for item in value if isinstance(item, Mapping)]
        if len(values) != len(value) or not all(isinstance(v, str) for v in values):
            return None
        added.extend(str(v) for v in values)
    return added, removed


def _with_members(
    group: Mapping[str, Any], added: Sequence[str], removed: Sequence[str], scim_id: str, cap: int
) -> dict[str, Any]:
    """The PUT body of ``group`` with our members added and removed; every other member kept as it was."""
    body = apply_operations(group, []) or {}
    key = _key(body, "members")
    members = [m for m in body.get(key) or [] if isinstance(m, Mapping)]
    gone = set(removed)
    kept = [dict(m) for m in members if str(_field(m, "value")) not in gone]
    present = {str(_field(m, "value")) for m in kept}
    kept += [{"value": member} for member in dict.fromkeys(added) if member not in present]
    if len(kept) > cap:
        raise FallbackRefused(
            f"Groups {scim_id}: the target refuses every PATCH of a group, and a PUT of this whole group would "
            f"carry {len(kept)} members, more than SCIM_GROUP_PUT_MAX_MEMBERS={cap}; raise SCIM_GROUP_PUT_MAX_MEMBERS "
            "or ask the target's vendor to accept PATCH of group members"
        )
    body[key] = kept
    return body


async def _read_modify_put(
    client: ScimPort,
    resource_type: str,
    scim_id: str,
    modify: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    if_match: str | None,
) -> ScimResult | None:
    """GET the resource, ``modify`` it, PUT it back with ``If-Match`` when the target versions it; a 412 reads
    it again, at most ``SCIM_PRECONDITION_RETRIES`` times. ``None`` when ``modify`` cannot say the change."""
    rules = client.profile.rules(resource_type)
    if Operation.GET not in rules.operations or Operation.REPLACE not in rules.operations:
        return None
    retries = client.settings.precondition_retries
    for attempt in range(retries + 1):
        current = await client.get(resource_type, scim_id)
        if current.resource is None:
            return None
        body = modify(current.resource)
        if body is None:
            return None
        try:
            result = await client.replace(resource_type, scim_id, body, if_match=if_match or current.etag)
        except ScimPreconditionFailed:
            if if_match is not None or attempt >= retries:
                raise
            logger.info("%s %s changed since it was read (412); reading it again", resource_type, scim_id)
            continue
        client.stats.replaced_by_put += 1
        return result
    return None  # pragma: no cover - the loop returns or raises


async def _send(
    client: ScimPort,
    resource_type: str,
    scim_id: str,
    operations: list[dict[str, Any]],
    form: PatchForm,
    if_match: str | None,
) -> ScimResult | None:
    """One attempt in ``form``; ``None`` when the form cannot say it (the operations do not apply
    locally, or the profile forbids the GET and PUT it needs)."""
    if form is not PatchForm.REPLACE:
        return await client.patch_request(resource_type, scim_id, to_form(operations, form), if_match=if_match)
    return await _read_modify_put(
        client, resource_type, scim_id, lambda resource: apply_operations(resource, operations), if_match
    )


async def patch_with_fallback(
    client: ScimPort,
    resource_type: str,
    scim_id: str,
    operations: list[dict[str, Any]],
    *,
    if_match: str | None = None,
) -> ScimResult:
    """PATCH ``operations``, falling back to another form when the target refuses this one, and to a PUT of the
    whole group when it refuses every PATCH of a group (see the module docstring). Raises the first form's error
    when no form works."""
    members = _member_changes(operations) if resource_type == "Groups" else None
    quirks = client.quirks
    if members is not None and quirks.working_form(resource_type, PatchKind.MEMBERSHIP) is PatchForm.REPLACE:
        return await _put_members(client, resource_type, scim_id, members, if_match)
    try:
        result = await _patch_in_some_form(client, resource_type, scim_id, operations, if_match)
    except ScimHTTPError as error:
        if members is None or error.status not in _REFUSED_METHOD or client.settings.group_put_max_members == 0:
            raise
        logger.info("%s PATCH: the target refuses it (HTTP %s); updating the group by PUT", resource_type, error.status)
        put = await _put_members(client, resource_type, scim_id, members, if_match)
        quirks.record_refused(resource_type, PatchKind.MEMBERSHIP, PatchForm.AS_GIVEN)
        quirks.record_working(resource_type, PatchKind.MEMBERSHIP, PatchForm.REPLACE)
        return put
    return result


async def _put_members(
    client: ScimPort,
    resource_type: str,
    scim_id: str,
    members: tuple[list[str], list[str]],
    if_match: str | None,
) -> ScimResult:
    added, removed = members
    cap = client.settings.group_put_max_members
    result = await _read_modify_put(
        client,
        resource_type,
        scim_id,
        lambda group: _with_members(group, added, removed, scim_id, cap),
        if_match,
    )
    if result is None:
        raise FallbackRefused(
            f"{resource_type} {scim_id}: the target refuses every PATCH of a group and the profile allows no GET "
            "and PUT to update it instead"
        )
    return result


async def _patch_in_some_form(
    client: ScimPort,
    resource_type: str,
    scim_id: str,
    operations: list[dict[str, Any]],
    if_match: str | None,
) -> ScimResult:
    shape = classify(operations)
    if shape is None:
        return await client.patch_request(resource_type, scim_id, operations, if_match=if_match)
    kind, given = shape
    quirks = client.quirks
    working = quirks.working_form(resource_type, kind)
    first_error: ScimHTTPError | None = None
    maybe_refused: list[PatchForm] = []
    member_absent = False
    for form in quirks.patch_forms(resource_type, kind, given):
        try:
            result = await _send(client, resource_type, scim_id, operations, form, if_match)
        except ScimHTTPError as error:
            absent_member = kind is PatchKind.MEMBER_REMOVAL and error.status == 400 and error.scim_type == "noTarget"
            if absent_member and (form == working or form is PatchForm.MEMBER_FILTER):
                client.stats.already_done += 1
                return ScimResult(None, 400, error.attempts, error.latency_s, already_done=True)
            if not refuses_form(error, form) or not _valid_paths(operations):
                raise
            member_absent = member_absent or absent_member
            if error.status == 501:
                quirks.record_refused(resource_type, kind, form)
            else:
                maybe_refused.append(form)
            first_error = first_error or error
            logger.info("%s PATCH: the target refused the %s form; trying another", resource_type, form.value)
            continue
        if result is None:
            continue
        for refused in maybe_refused:
            quirks.record_refused(resource_type, kind, refused)
        quirks.record_working(resource_type, kind, form)
        quirks.observe_patch(resource_type, operations, result.resource)
        return result
    if first_error is None:  # no form could be tried (the known one cannot say these operations)
        return await client.patch_request(resource_type, scim_id, operations, if_match=if_match)
    if member_absent:
        # The forms the target accepts said "no such member": nothing was left to remove.
        client.stats.already_done += 1
        return ScimResult(None, 400, first_error.attempts, first_error.latency_s, already_done=True)
    raise first_error
