"""PATCH in a form the target accepts.

Some targets refuse a PATCH form outright — 501 on attribute paths, 501 on removing
``members[value eq "id"]`` — or answer 400 ``invalidPath`` / ``noTarget`` to a path that is valid.
A refused form falls back to another one that says the same thing:

* attribute changes by path → PUT of the resource: GET it, apply the operations locally
  (scim2-models' ``PatchOp.patch``), PUT the result (attributes the model does not know are kept);
* member removal by filter ⇄ member removal by a value list
  (``{"op": "remove", "path": "members", "value": [{"value": "id"}, …]}``).

The form that worked is remembered in the client's :class:`~.target_quirks.TargetQuirks`, so the
next call goes straight to it. A 501 proves a form refused at once; a 400 does so only once another
form has worked. A member removal by filter answered ``noTarget`` is already done (the member is not
there) and never retried as a value list: a server that ignores the value of ``remove members``
removes every member (RFC 7644 §3.5.2.2). A value-list removal refused (400 ``invalidValue``,
``invalidPath``, ``noTarget`` or 501) is retried by filter, which removes only what it names.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, PatchOp, Path, ScimPolicy
from scim2_models.exceptions import SCIMException

from ._port import ScimPort
from .errors import ScimHTTPError
from .filters import literal
from .models import RESOURCE_MODELS, parse_resource
from .profiles import Operation
from .results import ScimResult
from .target_quirks import PatchForm, PatchKind

__all__ = ["classify", "patch_with_fallback", "refuses_form", "to_form"]

logger = logging.getLogger("scim_pipeline.scim")

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_REFUSING_SCIM_TYPES: dict[PatchForm, frozenset[str]] = {
    PatchForm.ATTRIBUTE_PATH: frozenset({"invalidPath", "noTarget"}),
    PatchForm.MEMBER_FILTER: frozenset({"invalidPath"}),
    PatchForm.MEMBER_VALUE_LIST: frozenset({"invalidPath", "invalidValue", "noTarget"}),
    PatchForm.REPLACE: frozenset(),
}
_PUT_DROPS = frozenset({"id", "meta", "groups"})
_TOLERANT = ScimPolicy(unknown=ScimPolicy.Unknown.keep)


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
    """Whether an error may mean "not in this form": 501, or a 400 whose scimType says so for ``form``
    (``invalidPath`` / ``noTarget`` for an attribute path, only ``invalidPath`` for a member filter)."""
    return error.status == 501 or (error.status == 400 and error.scim_type in _REFUSING_SCIM_TYPES[form])


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


def _replacement(
    resource_type: str, resource: Mapping[str, Any], operations: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The PUT body of ``resource`` with ``operations`` applied; ``None`` when they cannot be applied
    locally (the model refuses the resource or the operations)."""
    model = RESOURCE_MODELS.get(resource_type)
    if model is None:
        return None
    try:
        parsed = parse_resource(resource_type, dict(resource))
        patch = PatchOp[model].model_validate(  # type: ignore[valid-type]
            {"schemas": [PATCH_SCHEMA], "Operations": [dict(op) for op in operations]},
            scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        )
        patch.patch(parsed, scim_policy=_TOLERANT)
        body: dict[str, Any] = parsed.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    except (SCIMException, ValidationError, ValueError, TypeError):
        return None
    dumped = {key.lower() for key in body}
    known = {str(info.serialization_alias or name).lower() for name, info in model.model_fields.items()}
    known |= {str(info.alias).lower() for info in model.model_fields.values() if info.alias}
    for key, value in resource.items():
        lowered = str(key).lower()
        if lowered not in dumped and lowered not in known and lowered not in _PUT_DROPS:
            body[key] = copy.deepcopy(value)  # a server-specific attribute the model does not know: kept
    return body


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
    rules = client.profile.rules(resource_type)
    if Operation.GET not in rules.operations or Operation.REPLACE not in rules.operations:
        return None
    current = await client.get(resource_type, scim_id)
    if current.resource is None:
        return None
    body = _replacement(resource_type, current.resource, operations)
    if body is None:
        return None
    return await client.replace(resource_type, scim_id, body, if_match=if_match)


async def patch_with_fallback(
    client: ScimPort,
    resource_type: str,
    scim_id: str,
    operations: list[dict[str, Any]],
    *,
    if_match: str | None = None,
) -> ScimResult:
    """PATCH ``operations``, falling back to another form when the target refuses this one (see the
    module docstring). Raises the first form's error when no form works."""
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
