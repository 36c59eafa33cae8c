"""Building and checking SCIM filters — the one place that decides what a filter may contain.

Filters are built and parsed with scim2-models' :class:`~scim2_models.ScimFilter`. A value is
always rendered as a JSON string literal, so no roster value — quotes, backslashes,
``" or userName pr``, control characters — can change a filter's meaning. Non-ASCII characters are
sent as they are (raw UTF-8, percent-encoded in the URL), never as ``\\uXXXX`` escapes: servers
that read the literal without decoding escapes (two real ones do) would match nothing.

A value such a server cannot match at all (one holding ``"``, ``\\`` or what the profile calls
unsafe) is looked up by :func:`lookup_filter`: an allowed comparison on its longest safe fragment,
the exact match being made on the client (see :mod:`.lookup`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
from dataclasses import dataclass
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

__all__ = [
    "LookupFilter",
    "and_filters",
    "check_filter",
    "compare_filter",
    "eq_filter",
    "literal",
    "lookup_filter",
    "parse_filter",
    "render_filter",
    "safe_fragment",
]


def literal(value: object) -> str:
    """A filter value as a JSON literal in raw UTF-8: ``"`` and ``\\`` escaped as RFC 7644 requires,
    control characters as JSON escapes, everything else as it is."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def render_filter(node: FilterNode) -> str:
    """The text of a filter tree, with :func:`literal` values (scim2-models escapes non-ASCII)."""
    if isinstance(node, Comparison):
        return f"{node.attr_path} {node.op.value} {literal(node.value)}"
    if isinstance(node, LogicalExpr):
        parts = []
        for term in node.terms:
            text = render_filter(term)
            nested_or = isinstance(term, LogicalExpr) and term.op == LogicalOperator.or_
            parts.append(f"({text})" if nested_or and node.op == LogicalOperator.and_ else text)
        return f" {node.op.value} ".join(parts)
    if isinstance(node, Not):
        return f"not ({render_filter(node.expr)})"
    if isinstance(node, ValuePathNode):
        suffix = f".{node.sub_attr}" if node.sub_attr else ""
        return f"{node.attr_path}[{render_filter(node.val_filter)}]{suffix}"
    return str(node)  # Present: no value


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


def compare_filter(attribute: str, op: str, value: str) -> ScimFilter[Any]:
    """``attribute op "value"`` with the value as a raw UTF-8 JSON string (:func:`literal`).

    ``attribute`` must be a plain attribute path (``userName``, ``container.value``,
    ``urn:…:User:employeeNumber``); anything else raises :class:`ConfigurationError`, so an
    attribute name cannot smuggle syntax in either.
    """
    if not isinstance(value, str):
        raise TypeError(f"a filter value must be a string, got {type(value).__name__}")
    node = Comparison(_attribute_path(attribute), CompareOperator(op.lower()), value)
    return ScimFilter(render_filter(node))


def eq_filter(attribute: str, value: str) -> ScimFilter[Any]:
    """``attribute eq "value"`` (see :func:`compare_filter`)."""
    return compare_filter(attribute, "eq", value)


def and_filters(*filters: str | ScimFilter[Any] | None) -> ScimFilter[Any] | None:
    """Join filters with ``and`` (a disjunction inside is parenthesised); ``None``s are skipped."""
    nodes: list[FilterNode] = [parse_filter(str(f)).ast for f in filters if f]
    if not nodes:
        return None
    return ScimFilter(render_filter(functools.reduce(operator.and_, nodes)))


def safe_fragment(value: str, unsafe: frozenset[str]) -> str:
    """The longest run of ``value`` free of ``unsafe`` characters and control characters, without
    surrounding whitespace (servers may trim it); ``""`` when there is none."""
    runs: list[str] = []
    current: list[str] = []
    for char in value:
        if char in unsafe or ord(char) < 0x20 or ord(char) == 0x7F:
            runs.append("".join(current))
            current = []
        else:
            current.append(char)
    runs.append("".join(current))
    return max((run.strip() for run in runs), key=len, default="")


@dataclass(frozen=True)
class LookupFilter:
    """The filter a look-up sends; ``exact`` False means it may match more than the value (a fragment
    comparison), so only an exact match on the client counts."""

    filter: ScimFilter[Any]
    exact: bool


def lookup_filter(profile: Profile | str, resource_type: str, attribute: str, value: str) -> LookupFilter:
    """How to look a resource up by ``attribute`` = ``value`` under a profile's rules.

    A value the target can match literally gets ``eq``; one holding a character the profile calls
    unsafe gets the best comparison the rules allow on its longest safe fragment (``eq`` is never
    used on a fragment): ``sw`` when the fragment starts the value, ``ew`` when it ends it, else
    ``co``. A value with no safe fragment, or an attribute the rules allow no such comparison on,
    falls back to ``eq`` with the value escaped as RFC 7644 requires: the best a look-up can do there.
    :class:`FilterRefused` when the profile refuses the attribute altogether.
    """
    profile = get_profile(profile)
    rules = profile.rules(resource_type)
    unsafe = profile.filter_unsafe_characters
    exact = eq_filter(attribute, value)
    check_filter(profile, resource_type, str(exact))
    if not any(char in unsafe or ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return LookupFilter(exact, exact=True)
    fragment = safe_fragment(value, unsafe)
    if fragment:
        candidates = [op for op, fits in (("sw", value.startswith(fragment)), ("ew", value.endswith(fragment))) if fits]
        for op in [*candidates, "co"]:
            if rules.filters.allows(attribute, op):
                return LookupFilter(compare_filter(attribute, op, fragment), exact=False)
    return LookupFilter(exact, exact=True)


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
