"""What one target does differently from what was asked, learned while talking to it.

* **Dropped attributes:** a target that stores no ``title`` (or no enterprise extension) answers a
  create, replace or PATCH without it. Comparing each answer with what was written — and reading
  ``/Schemas`` when it is served — finds them; each is reported once (a warning naming the
  attribute, never per user) and listed by :meth:`TargetQuirks.dropped_attributes`, so the sync can
  leave them out of drift and diffs. An attribute later seen stored is taken off the list.
* **PATCH forms:** the form a target refused (501, or 400 ``invalidPath``/``noTarget`` on a valid
  path) and the one that worked instead, per resource type and kind of change, so the next call
  goes straight to the working form (see :mod:`.patch_forms`).
* **Token authentication:** the client-authentication method the token endpoint accepted (for one token URL and
  client id), so later runs send it first and a refusal then means the credentials, not the method.
* **Look-up filters:** the filter operators the target answered 400 ``invalidFilter`` to, per resource type and
  attribute, so look-ups go straight to a form it accepts (see :mod:`.lookup`).

Attribute paths use the sync's notation: ``title``, ``name.givenName``,
``emails[type eq "work"].value``,
``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``. :meth:`to_dict` and
:meth:`from_dict` let a caller keep the quirks per target between runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["PatchForm", "PatchKind", "TargetQuirks", "written_paths"]

logger = logging.getLogger("scim_pipeline.scim")

_FORMAT_VERSION = 1
_NOT_WRITTEN = frozenset({"schemas", "id", "meta", "password", "members", "groups"})
"""Attributes a comparison never looks at: never echoed (password), or answered apart (memberships)."""
_IGNORED_SUBS = frozenset({"type", "primary"})
"""Sub-attributes of a typed multi-valued entry that select or flag it rather than carry data."""
_TYPED = re.compile(r'^(?P<attr>[^\[\].]+)\[type eq "(?P<type>[^"]*)"\](?:\.(?P<sub>[^\[\].]+))?$')


class PatchKind(StrEnum):
    """The kinds of PATCH whose form a target may refuse."""

    ATTRIBUTES = "attributes"
    """Changes to attributes of a resource, by attribute path."""
    MEMBER_REMOVAL = "member-removal"
    """Removal of group members."""
    MEMBERSHIP = "membership"
    """Any change of group members (adds and removals), when the target refuses every PATCH of a group."""


class PatchForm(StrEnum):
    """How a change is sent."""

    AS_GIVEN = "patch"
    """The PATCH as the sync wrote it."""
    ATTRIBUTE_PATH = "attribute-path"
    """``{"op": "replace", "path": "title", "value": …}`` (RFC 7644 §3.5.2)."""
    REPLACE = "replace"
    """GET the resource, apply the operations locally, PUT it back."""
    MEMBER_FILTER = "member-filter"
    """``{"op": "remove", "path": "members[value eq \\"id\\"]"}``, one operation per member."""
    MEMBER_VALUE_LIST = "member-value-list"
    """``{"op": "remove", "path": "members", "value": [{"value": "id"}, …]}`` (as Entra ID sends it)."""


FORMS: Mapping[PatchKind, tuple[PatchForm, ...]] = {
    PatchKind.ATTRIBUTES: (PatchForm.ATTRIBUTE_PATH, PatchForm.REPLACE),
    PatchKind.MEMBER_REMOVAL: (PatchForm.MEMBER_FILTER, PatchForm.MEMBER_VALUE_LIST),
    PatchKind.MEMBERSHIP: (PatchForm.AS_GIVEN, PatchForm.REPLACE),
}
"""The forms of each kind, in the order they are tried when nothing is known."""


def _split_schema(path: str) -> tuple[str | None, str]:
    if not path.lower().startswith("urn:"):
        return None, path
    head = path.split("[", 1)[0]
    schema, _, attribute = head.rpartition(":")
    return schema, attribute + path[len(head) :]


def _get(mapping: object, name: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    return next((value for key, value in mapping.items() if str(key).lower() == lowered), None)


def _missing(value: object) -> bool:
    return value is None or value in ("", [], {})


def _is_reference(value: Mapping[str, Any]) -> bool:
    keys = {str(key).lower() for key in value}
    return "value" in keys and keys <= {"value", "display", "$ref", "type"}


def _add_paths(schema: str | None, name: str, value: object, out: dict[str, None]) -> None:
    base = f"{schema}:{name}" if schema else name
    if _missing(value):
        return
    if isinstance(value, Mapping):
        if _is_reference(value):
            out[base] = None
            return
        for sub, item in value.items():
            if not _missing(item) and not isinstance(item, Mapping | list):
                out[f"{base}.{sub}"] = None
        return
    if isinstance(value, list):
        for item in value:
            kind = _get(item, "type")
            if isinstance(item, Mapping) and isinstance(kind, str):
                for sub, sub_value in item.items():
                    if str(sub).lower() not in _IGNORED_SUBS and not _missing(sub_value):
                        out[f'{base}[type eq "{kind}"].{sub}'] = None
            else:
                out[base] = None
        return
    out[base] = None


def written_paths(body: Mapping[str, Any]) -> list[str]:
    """The attribute paths a request body writes (``title``, ``name.givenName``,
    ``emails[type eq "work"].value``, ``urn:…:User:department``), in body order."""
    out: dict[str, None] = {}
    for name, value in body.items():
        key = str(name)
        if key.lower() in _NOT_WRITTEN:
            continue
        if key.lower().startswith("urn:") and isinstance(value, Mapping):
            for sub, item in value.items():
                _add_paths(key, str(sub), item, out)
        else:
            _add_paths(None, key, value, out)
    return list(out)


def _patched_paths(operations: Sequence[Mapping[str, Any]]) -> list[str]:
    """The attribute paths the ``add`` / ``replace`` operations of a PATCH write."""
    out: dict[str, None] = {}
    for operation in operations:
        if str(_get(operation, "op") or "").lower() not in ("add", "replace"):
            continue
        path, value = _get(operation, "path"), _get(operation, "value")
        if not path:
            if isinstance(value, Mapping):
                out.update(dict.fromkeys(written_paths(value)))
            continue
        if not isinstance(path, str) or path.lower().split("[", 1)[0].split(".", 1)[0] in _NOT_WRITTEN:
            continue
        schema, rest = _split_schema(path)
        if "[" in rest or not isinstance(value, Mapping | list):
            if not _missing(value):
                out[path] = None
            continue
        _add_paths(schema, rest, value, out)
    return list(out)


def _stored(resource: Mapping[str, Any], path: str) -> bool:
    """Whether ``resource`` holds a value at ``path``."""
    schema, rest = _split_schema(path)
    container: object = resource if schema is None else _get(resource, schema)
    typed = _TYPED.match(rest)
    if typed:
        entries = _get(container, typed["attr"])
        if not isinstance(entries, list):
            return False
        wanted = typed["type"].lower()
        for entry in entries:
            kind = _get(entry, "type")
            if isinstance(kind, str) and kind.lower() == wanted:
                return not _missing(_get(entry, typed["sub"] or "value"))
        return False
    attribute, _, sub = rest.partition(".")
    value = _get(container, attribute)
    if sub:
        value = _get(value, sub)
    return not _missing(value)


@dataclass
class _Schema:
    """What /Schemas and /ResourceTypes say one resource type holds (lower-cased names)."""

    core: dict[str, frozenset[str] | None]
    extensions: dict[str, dict[str, frozenset[str] | None]]


@dataclass
class TargetQuirks:
    """Dropped attributes and refused PATCH forms of one target (see the module docstring)."""

    _dropped: dict[str, dict[str, None]] = field(default_factory=dict)
    _kept: dict[str, set[str]] = field(default_factory=dict)
    _schemas: dict[str, _Schema] = field(default_factory=dict)
    _refused: dict[tuple[str, PatchKind], set[PatchForm]] = field(default_factory=dict)
    _working: dict[tuple[str, PatchKind], PatchForm] = field(default_factory=dict)
    _reported: set[tuple[str, str]] = field(default_factory=set)
    _token_auth: dict[str, str] = field(default_factory=dict)
    _refused_operators: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    revision: int = 0
    """Counts the changes, so a caller persists :meth:`to_dict` only when it grew."""

    # -- dropped attributes ---------------------------------------------------------------------

    def dropped_attributes(self, resource_type: str, among: Iterable[str] | None = None) -> frozenset[str]:
        """The attribute paths the target does not store on ``resource_type``: those seen dropped from
        an answer, and — when ``among`` is given — those of ``among`` its ``/Schemas`` does not define."""
        dropped = set(self._dropped.get(resource_type, {}))
        if among is not None:
            kept = self._kept.get(resource_type, set())
            for path in among:
                if path not in kept and self.schema_defines(resource_type, path) is False:
                    self._report(resource_type, path, "its /Schemas does not define it")
                    dropped.add(path)
        return frozenset(dropped)

    def observe_write(
        self, resource_type: str, written: Mapping[str, Any], answer: Mapping[str, Any] | None
    ) -> frozenset[str]:
        """Compare a create's or replace's body with the target's answer; returns the paths newly found
        dropped. An answer without a body (204) says nothing."""
        return self._observe(resource_type, written_paths(written), answer)

    def observe_patch(
        self, resource_type: str, operations: Sequence[Mapping[str, Any]], answer: Mapping[str, Any] | None
    ) -> frozenset[str]:
        """Compare what a PATCH's ``add``/``replace`` operations wrote with the target's answer."""
        return self._observe(resource_type, _patched_paths(operations), answer)

    def _observe(self, resource_type: str, paths: list[str], answer: Mapping[str, Any] | None) -> frozenset[str]:
        if not isinstance(answer, Mapping) or not paths or not (_get(answer, "id") or _get(answer, "schemas")):
            return frozenset()
        dropped = self._dropped.setdefault(resource_type, {})
        kept = self._kept.setdefault(resource_type, set())
        new: set[str] = set()
        for path in paths:
            if _stored(answer, path):
                kept.add(path)
                if path in dropped:
                    del dropped[path]
                    self.revision += 1
                    logger.info("%s: the target now stores %s", resource_type, path)
            elif path not in dropped:
                dropped[path] = None
                new.add(path)
                self.revision += 1
                self._report(resource_type, path, "its answers to writes leave it out")
        return frozenset(new)

    def _report(self, resource_type: str, path: str, why: str) -> None:
        if (resource_type, path) in self._reported:
            return
        self._reported.add((resource_type, path))
        logger.warning(
            "%s: the target does not store %s (%s); it is left out of drift and diffs", resource_type, path, why
        )

    def learn_schemas(self, schemas: Iterable[Mapping[str, Any]], resource_types: Iterable[Mapping[str, Any]]) -> None:
        """Read the ``/Schemas`` documents and the ``/ResourceTypes`` entries (with their endpoint
        already normalized to a name such as ``"Users"`` under the key ``endpoint``)."""
        documents: dict[str, dict[str, frozenset[str] | None]] = {}
        for schema in schemas:
            schema_id, attributes = _get(schema, "id"), _get(schema, "attributes")
            if not isinstance(schema_id, str) or not isinstance(attributes, list):
                continue
            names: dict[str, frozenset[str] | None] = {}
            for attribute in attributes:
                name, subs = _get(attribute, "name"), _get(attribute, "subAttributes")
                if isinstance(name, str):
                    sub_names = [_get(s, "name") for s in subs] if isinstance(subs, list) else None
                    names[name.lower()] = (
                        frozenset(str(s).lower() for s in sub_names if isinstance(s, str))
                        if sub_names is not None
                        else None
                    )
            documents[schema_id.lower()] = names
        for resource_type in resource_types:
            endpoint, core = _get(resource_type, "endpoint"), _get(resource_type, "schema")
            if not isinstance(endpoint, str) or not isinstance(core, str) or core.lower() not in documents:
                continue
            extensions = {}
            for extension in _get(resource_type, "schemaExtensions") or []:
                urn = _get(extension, "schema")
                if isinstance(urn, str):
                    extensions[urn.lower()] = documents.get(urn.lower(), {})
            self._schemas[endpoint] = _Schema(core=documents[core.lower()], extensions=extensions)

    def schema_defines(self, resource_type: str, path: str) -> bool | None:
        """Whether the served schemas define ``path`` on ``resource_type``; ``None`` when unknown."""
        schema = self._schemas.get(resource_type)
        if schema is None:
            return None
        urn, rest = _split_schema(path)
        if urn is None:
            attributes = schema.core
        elif urn.lower() in schema.extensions:
            attributes = schema.extensions[urn.lower()]
        else:
            return False
        typed = _TYPED.match(rest)
        attribute, sub = (typed["attr"], typed["sub"]) if typed else (rest.partition(".")[0], rest.partition(".")[2])
        if attribute.lower() not in attributes:
            return False
        subs = attributes[attribute.lower()]
        return not sub or subs is None or sub.lower() in subs

    # -- PATCH forms ----------------------------------------------------------------------------

    def patch_forms(self, resource_type: str, kind: PatchKind, given: PatchForm) -> list[PatchForm]:
        """The forms to try, in order: the one known to work, the one given, then the others; forms
        the target refused come last."""
        key = (resource_type, kind)
        order = [form for form in (self._working.get(key), given) if form is not None]
        order += [form for form in FORMS[kind] if form not in order]
        refused = self._refused.get(key, set())
        return [form for form in order if form not in refused] + [form for form in order if form in refused]

    def working_form(self, resource_type: str, kind: PatchKind) -> PatchForm | None:
        """The form known to work (it succeeded on this target), if any."""
        return self._working.get((resource_type, kind))

    def refused_forms(self, resource_type: str, kind: PatchKind) -> frozenset[PatchForm]:
        """The forms this target refused."""
        return frozenset(self._refused.get((resource_type, kind), set()))

    def record_refused(self, resource_type: str, kind: PatchKind, form: PatchForm) -> None:
        key = (resource_type, kind)
        if form in self._refused.setdefault(key, set()):
            return
        self._refused[key].add(form)
        if self._working.get(key) == form:
            del self._working[key]
        self.revision += 1
        logger.warning("%s: the target refuses the %s form of %s PATCH", resource_type, form.value, kind.value)

    def record_working(self, resource_type: str, kind: PatchKind, form: PatchForm) -> None:
        key = (resource_type, kind)
        if self._working.get(key) == form:
            return
        self._working[key] = form
        self._refused.get(key, set()).discard(form)
        self.revision += 1
        if form != FORMS[kind][0]:
            logger.warning("%s: %s PATCH goes by the %s form on this target", resource_type, kind.value, form.value)

    # -- token authentication -------------------------------------------------------------------

    def token_auth(self, token_url: str, client_id: str) -> str | None:
        """The client-authentication method this token endpoint accepted from this client, if known."""
        if self._token_auth.get("token_url") == token_url and self._token_auth.get("client_id") == client_id:
            return self._token_auth.get("method")
        return None

    def record_token_auth(self, token_url: str, client_id: str, method: str) -> None:
        if self.token_auth(token_url, client_id) == method:
            return
        self._token_auth = {"token_url": token_url, "client_id": client_id, "method": method}
        self.revision += 1

    # -- look-up filters ----------------------------------------------------------------------

    def refused_operators(self, resource_type: str, attribute: str) -> frozenset[str]:
        """The filter operators the target refused (400 invalidFilter) on ``attribute`` of ``resource_type``."""
        return frozenset(self._refused_operators.get((resource_type, attribute.lower()), set()))

    def record_refused_operator(self, resource_type: str, attribute: str, operator: str) -> None:
        refused = self._refused_operators.setdefault((resource_type, attribute.lower()), set())
        if operator.lower() in refused:
            return
        refused.add(operator.lower())
        self.revision += 1
        logger.warning(
            "%s: the target refuses the filter operator %s on %s; look-ups use another form",
            resource_type,
            operator.lower(),
            attribute,
        )

    # -- reporting and persistence --------------------------------------------------------------

    def summary(self) -> list[tuple[str, str]]:
        """(what, finding) pairs for a report such as ``check``'s."""
        rows = []
        for resource_type, dropped in sorted(self._dropped.items()):
            if dropped:
                rows.append((f"{resource_type} dropped attributes", ", ".join(dropped)))
        for (resource_type, kind), form in sorted(self._working.items()):
            rows.append((f"{resource_type} {kind.value} PATCH", f"{form.value} works"))
        for (resource_type, kind), forms in sorted(self._refused.items()):
            if forms:
                rows.append((f"{resource_type} {kind.value} PATCH", "refused: " + ", ".join(sorted(forms))))
        for (resource_type, attribute), operators in sorted(self._refused_operators.items()):
            rows.append((f"{resource_type} filters on {attribute}", "refused: " + ", ".join(sorted(operators))))
        if self._token_auth:
            rows.append(("token endpoint", f"accepts {self._token_auth.get('method')}"))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (what was found, not the /Schemas read: that is read again)."""
        return {
            "version": _FORMAT_VERSION,
            "dropped": {rt: list(paths) for rt, paths in sorted(self._dropped.items()) if paths},
            "patch_forms": [
                {
                    "resource_type": resource_type,
                    "kind": kind.value,
                    "working": self._working[(resource_type, kind)].value
                    if (resource_type, kind) in self._working
                    else None,
                    "refused": sorted(form.value for form in self._refused.get((resource_type, kind), set())),
                }
                for resource_type, kind in sorted(set(self._working) | set(self._refused))
            ],
            "token_auth": dict(self._token_auth) or None,
            "refused_operators": [
                {"resource_type": resource_type, "attribute": attribute, "operators": sorted(operators)}
                for (resource_type, attribute), operators in sorted(self._refused_operators.items())
                if operators
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TargetQuirks:
        """Quirks saved by :meth:`to_dict`; an unknown version or shape gives empty quirks (they are
        found again), and what was already reported is not warned about again."""
        quirks = cls()
        if not isinstance(data, Mapping) or data.get("version") != _FORMAT_VERSION:
            return quirks
        dropped = data.get("dropped")
        if isinstance(dropped, Mapping):
            for resource_type, paths in dropped.items():
                if isinstance(paths, list):
                    quirks._dropped[str(resource_type)] = {str(p): None for p in paths if isinstance(p, str)}
                    quirks._reported.update((str(resource_type), str(p)) for p in paths)
        for entry in data.get("patch_forms") or []:
            try:
                key = (str(entry["resource_type"]), PatchKind(entry["kind"]))
                if entry.get("working"):
                    quirks._working[key] = PatchForm(entry["working"])
                refused = {PatchForm(form) for form in entry.get("refused") or []}
            except (KeyError, TypeError, ValueError):
                continue
            if refused:
                quirks._refused[key] = refused
        # Added later in version 1: older snapshots lack these keys, and an odd value is ignored (found again).
        token_auth = data.get("token_auth")
        if isinstance(token_auth, Mapping) and all(
            isinstance(token_auth.get(key), str) for key in ("token_url", "client_id", "method")
        ):
            quirks._token_auth = {key: str(token_auth[key]) for key in ("token_url", "client_id", "method")}
        for entry in data.get("refused_operators") or []:
            if not isinstance(entry, Mapping):
                continue
            resource_type, attribute = entry.get("resource_type"), entry.get("attribute")
            operators = entry.get("operators")
            if isinstance(resource_type, str) and isinstance(attribute, str) and isinstance(operators, list):
                quirks._refused_operators[(resource_type, attribute.lower())] = {
                    str(op).lower() for op in operators if isinstance(op, str)
                }
        return quirks
