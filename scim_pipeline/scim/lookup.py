"""Looking a resource up by one attribute value, safely, on any target.

The first filter comes from :func:`.filters.lookup_filter`: ``eq`` on the value when the target can match
it literally, else an allowed comparison on a safe fragment of it; a target that refuses it (400
``invalidFilter``) gets the next form the profile allows, down to a bounded listing (:func:`find_one`).
Whatever the form, the answer is matched
exactly on the client — a server that ignores or loosens a filter, or a fragment that matches
others, must never make the client adopt someone else. Case rules follow RFC 7643: ``id``,
``externalId`` and reference ``value`` sub-attributes compare exactly, other strings
case-insensitively (``userName``, ``displayName``, ``name``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scim2_models.path import Comparison

from ._port import ScimPort
from .errors import AmbiguousMatchError, FilterRefused, PaginationError, ScimHTTPError
from .filters import check_filter, compare_filter, eq_filter, lookup_filter, safe_fragment
from .profiles import Profile
from .target_quirks import TargetQuirks

__all__ = [
    "attribute_value",
    "find_existing",
    "find_one",
    "is_case_exact",
    "lookup_forms",
    "refuses_filter",
    "same_value",
]

_CASE_EXACT = frozenset({"id", "externalid"})


def is_case_exact(attribute: str) -> bool:
    """Whether values of ``attribute`` compare case-sensitively (RFC 7643 ``caseExact``)."""
    name = attribute.rsplit(":", 1)[-1] if attribute.lower().startswith("urn:") else attribute
    lowered = name.lower()
    return lowered in _CASE_EXACT or (lowered.endswith(".value") and "[" not in lowered)


def attribute_value(resource: Mapping[str, Any], attribute: str) -> object:
    """The value of a plain, dotted or schema-qualified attribute (``urn:…:User:employeeNumber``) of a
    resource, names compared case-insensitively; ``None`` when absent."""
    current: object = resource
    path = attribute
    if attribute.lower().startswith("urn:"):
        schema, _, path = attribute.rpartition(":")
        current = _get(resource, schema)
    for name in path.split("."):
        current = _get(current, name)
    return current


def same_value(attribute: str, found: object, wanted: str) -> bool:
    """Whether a resource's value of ``attribute`` is ``wanted`` under the attribute's case rule."""
    if not isinstance(found, str):
        return False
    if is_case_exact(attribute):
        return found == wanted
    return found.casefold() == wanted.casefold()


def _get(mapping: object, name: str) -> object:
    if not isinstance(mapping, Mapping):
        return None
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    return next((value for key, value in mapping.items() if str(key).lower() == lowered), None)


def _safe_runs(value: str, unsafe: frozenset[str]) -> list[str]:
    runs = [""]
    for char in value:
        if char in unsafe or ord(char) < 0x20 or ord(char) == 0x7F:
            runs.append("")
        else:
            runs[-1] += char
    return runs


def lookup_forms(
    profile: Profile, quirks: TargetQuirks, resource_type: str, attribute: str, value: str
) -> list[tuple[str, str]]:
    """The ``(operator, operand)`` filter forms a look-up tries, in order (see :func:`find_one`): the form
    :func:`.filters.lookup_filter` picks, then ``eq`` on the value (only a value the target can match literally),
    ``co`` on its longest safe fragment, ``ew`` on its safe ending — only those the profile allows on
    ``attribute`` and the target has not refused. Empty: only a listing is left.

    :class:`~scim_pipeline.scim.FilterRefused` when the profile refuses every filter on ``attribute``."""
    first = lookup_filter(profile, resource_type, attribute, value)
    unsafe = profile.filter_unsafe_characters
    runs = _safe_runs(value, unsafe)
    literal_safe = len(runs) == 1
    fragment = safe_fragment(value, unsafe)
    ending = runs[-1].strip()
    node = first.filter.ast
    chosen = (node.op.value, node.value) if isinstance(node, Comparison) and isinstance(node.value, str) else None
    forms: list[tuple[str, str]] = [chosen] if chosen else []
    if literal_safe:
        forms.append(("eq", value))
    if fragment:
        forms.append(("co", fragment))
    if ending:
        forms.append(("ew", ending))
    rules = profile.rules(resource_type)
    refused = quirks.refused_operators(resource_type, attribute)
    return [
        form for form in dict.fromkeys(forms) if rules.filters.allows(attribute, form[0]) and form[0] not in refused
    ]


def refuses_filter(error: ScimHTTPError) -> bool:
    """Whether an error says "not this filter": 400 ``invalidFilter``, or 501 to a filtered listing."""
    return (error.status == 400 and (error.scim_type or "").lower() == "invalidfilter") or error.status == 501


async def _search_degrading(
    client: ScimPort, resource_type: str, attribute: str, value: str
) -> tuple[list[dict[str, Any]], bool]:
    """The candidates of a look-up and whether the form that found them was an exact ``eq``."""
    for operator, operand in lookup_forms(client.profile, client.quirks, resource_type, attribute, value):
        try:
            found = await client.search(resource_type, str(compare_filter(attribute, operator, operand)))
        except ScimHTTPError as error:
            if not refuses_filter(error):
                raise
            client.quirks.record_refused_operator(resource_type, attribute, operator)
            continue
        return found, operator == "eq" and operand == value
    return await _listed_matches(client, resource_type, attribute, value), False


async def _listed_matches(client: ScimPort, resource_type: str, attribute: str, value: str) -> list[dict[str, Any]]:
    """Every resource of a listing whose ``attribute`` is ``value``, read page by page (only matches are held),
    at most ``SCIM_LOOKUP_MAX_PAGES`` pages."""
    limit = client.settings.lookup_max_pages
    pages = 0
    kept: list[dict[str, Any]] = []
    async for page in client.iter_pages(resource_type):
        pages += 1
        if pages > limit:
            break
        kept.extend(match for match in page if same_value(attribute, attribute_value(match, attribute), value))
    if pages > limit:
        refused = ", ".join(sorted(client.quirks.refused_operators(resource_type, attribute))) or "none allowed"
        raise PaginationError(
            f"{resource_type}: the target refuses every filter on {attribute} ({refused}), and finding one by "
            f"listing them all takes more than SCIM_LOOKUP_MAX_PAGES={limit} pages; raise SCIM_LOOKUP_MAX_PAGES, "
            "or ask the target's vendor to accept 'eq' filters"
        )
    return kept


async def find_one(client: ScimPort, resource_type: str, attribute: str, value: str) -> dict[str, Any] | None:
    """The one resource whose ``attribute`` is ``value``; ``None`` when there is none.

    The look-up degrades until the target accepts it: ``eq`` with the value escaped as RFC 7644 defines, then
    ``co`` on a safe fragment, then ``ew``, then a bounded listing — a 400 ``invalidFilter`` (or 501) moves to the
    next form and is remembered in the client's quirks, so the next look-up starts with a form the target takes.
    The profile's filter matrix is never left (Delinea: ``eq``/``co`` only). Whatever the form, the answer is
    matched exactly on the client; after an ``eq`` look-up a resource that does not show the attribute is kept (the
    server matched it). :class:`~scim_pipeline.scim.AmbiguousMatchError` when several match exactly.
    """
    matches, exact = await _search_degrading(client, resource_type, attribute, value)
    kept = []
    for match in matches:
        found = attribute_value(match, attribute)
        if same_value(attribute, found, value) or (exact and found is None):
            kept.append(match)
    if len(kept) > 1:
        raise AmbiguousMatchError(
            f"{len(kept)} {resource_type} have the same {attribute}; refusing to pick one (remove the duplicate on "
            "the target, or match on externalId)"
        )
    return kept[0] if kept else None


async def find_existing(
    client: ScimPort, resource_type: str, payload: Mapping[str, Any], attribute: str, value: str
) -> dict[str, Any] | None:
    """The resource a create of ``payload`` may already have made, matched on ``attribute`` = ``value``.

    When the profile refuses a filter on that attribute (Delinea has no ``externalId eq``), the look-up goes by
    the profile's own matching attribute (``userName`` / ``displayName``) and only a resource whose
    ``attribute`` is ``value`` is returned."""
    rules = client.profile.rules(resource_type)
    try:
        check_filter(client.profile, resource_type, str(eq_filter(attribute, value)))
    except FilterRefused:
        fallback = rules.match_attribute
        fallback_value = attribute_value(payload, fallback) if fallback else None
        if not fallback or fallback == attribute or not isinstance(fallback_value, str) or not fallback_value:
            raise
        found = await find_one(client, resource_type, fallback, fallback_value)
        if found is None or not same_value(attribute, attribute_value(found, attribute), value):
            return None
        return found
    return await find_one(client, resource_type, attribute, value)
