"""Looking a resource up by one attribute value, safely, on any target.

The filter comes from :func:`.filters.lookup_filter`: ``eq`` on the value when the target can match
it literally, else an allowed comparison on a safe fragment of it. Either way the answer is matched
exactly on the client — a server that ignores or loosens a filter, or a fragment that matches
others, must never make the client adopt someone else. Case rules follow RFC 7643: ``id``,
``externalId`` and reference ``value`` sub-attributes compare exactly, other strings
case-insensitively (``userName``, ``displayName``, ``name``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._port import ScimPort
from .errors import AmbiguousMatchError, FilterRefused
from .filters import check_filter, eq_filter, lookup_filter

__all__ = ["attribute_value", "find_existing", "find_one", "is_case_exact", "same_value"]

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


async def find_one(client: ScimPort, resource_type: str, attribute: str, value: str) -> dict[str, Any] | None:
    """The one resource whose ``attribute`` is ``value``; ``None`` when there is none.

    :class:`~scim_pipeline.scim.AmbiguousMatchError` when several match exactly. After an ``eq``
    look-up a resource that does not show the attribute is kept (the server matched it); after a
    fragment look-up only an exact match on the client counts.
    """
    plan = lookup_filter(client.profile, resource_type, attribute, value)
    matches = await client.search(resource_type, str(plan.filter))
    kept = []
    for match in matches:
        found = attribute_value(match, attribute)
        if same_value(attribute, found, value) or (plan.exact and found is None):
            kept.append(match)
    if len(kept) > 1:
        raise AmbiguousMatchError(f"{len(kept)} {resource_type} match on {attribute}; refusing to pick one")
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
