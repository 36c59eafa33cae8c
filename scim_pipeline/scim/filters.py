"""Building and checking SCIM filters — the one place that decides what a filter may contain.

Filters are built and parsed with scim2-models' :class:`~scim2_models.ScimFilter`. A value is
always rendered as a JSON string literal (``ScimFilter.quote``), so no roster value — quotes,
backslashes, ``" or userName pr``, control characters — can change a filter's meaning.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from typing import Any

from scim2_models import InvalidFilterException, ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
)
from scim2_models.path import ValuePath as ValuePathNode
from scim2_models.path.expressions import FilterNode

from .errors import ConfigurationError, FilterRefused
from .profiles import Profile, ResourceTypeRules, get_profile

__all__ = ["and_filters", "check_filter", "eq_filter", "parse_filter"]


def parse_filter(text: str) -> ScimFilter[Any]:
    """Parse a filter; :class:`FilterRefused` (without echoing the text) if it is not valid SCIM."""
    try:
        return ScimFilter(text)
    except (InvalidFilterException, ValueError) as error:
        # The parser's message gives a column, never the text (which may hold roster values).
        raise FilterRefused(f"not a valid SCIM filter ({error})") from None


def _attribute_path(attribute: str) -> AttrPath:
    parsed = None
    with contextlib.suppress(InvalidFilterException, ValueError):
        parsed = ScimFilter(f"{attribute} pr").ast
    if not isinstance(parsed, Present):
        raise ConfigurationError(f"{attribute!r} is not a SCIM attribute path")
    return parsed.attr_path


def eq_filter(attribute: str, value: str) -> ScimFilter[Any]:
    """``attribute eq "value"`` with the value quoted as a JSON string.

    ``attribute`` must be a plain attribute path (``userName``, ``container.value``,
    ``urn:…:User:employeeNumber``); anything else raises :class:`ConfigurationError`, so an
    attribute name cannot smuggle syntax in either.
    """
    if not isinstance(value, str):
        raise TypeError(f"a filter value must be a string, got {type(value).__name__}")
    return ScimFilter(Comparison(_attribute_path(attribute), CompareOperator.eq, value))


def and_filters(*filters: str | ScimFilter[Any] | None) -> ScimFilter[Any] | None:
    """Join filters with ``and`` (a disjunction inside is parenthesised); ``None``s are skipped."""
    nodes: list[FilterNode] = [parse_filter(str(f)).ast for f in filters if f]
    if not nodes:
        return None
    return ScimFilter(functools.reduce(operator.and_, nodes))


def _refuse(profile: Profile, rules: ResourceTypeRules, what: str) -> FilterRefused:
    return FilterRefused(
        f"profile {profile.name!r} refuses {what} in a {rules.name} filter; it allows {rules.filters.describe()}"
    )


def _check_node(profile: Profile, rules: ResourceTypeRules, node: FilterNode) -> None:
    if isinstance(node, LogicalExpr):
        if node.op != LogicalOperator.and_:
            raise _refuse(profile, rules, f"the logical operator {node.op.value!r}")
        for term in node.terms:
            _check_node(profile, rules, term)
    elif isinstance(node, Comparison):
        attribute, op = str(node.attr_path), node.op.value
        if not rules.filters.allows(attribute, op):
            raise _refuse(profile, rules, f"'{attribute} {op}'")
        if not isinstance(node.value, str):
            raise _refuse(profile, rules, f"a non-string value for '{attribute} {op}'")
    elif isinstance(node, Present):
        raise _refuse(profile, rules, f"'{node.attr_path} pr'")
    elif isinstance(node, Not):
        raise _refuse(profile, rules, "'not'")
    elif isinstance(node, ValuePathNode):
        raise _refuse(profile, rules, f"the value path '{node.attr_path}[…]'")
    else:  # pragma: no cover - scim2-models has no other node type
        raise _refuse(profile, rules, type(node).__name__)


def check_filter(profile: Profile | str, resource_type: str, filter_text: str | None) -> ScimFilter[Any] | None:
    """Check a filter against a profile's rules for a resource type, before anything is sent.

    Returns the parsed filter (``None`` for no filter). Raises :class:`FilterRefused` naming what
    was refused and what the profile allows; the message never contains the filter's values.
    """
    profile = get_profile(profile)
    rules = profile.rules(resource_type)
    if filter_text is None or not str(filter_text).strip():
        if rules.filters.required:
            raise FilterRefused(
                f"profile {profile.name!r} cannot list {resource_type} without a filter; "
                f"give at least one of {rules.filters.describe()}"
            )
        return None
    parsed = parse_filter(str(filter_text))
    if not rules.filters.any_filter:
        _check_node(profile, rules, parsed.ast)
    return parsed
