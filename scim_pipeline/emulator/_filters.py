"""Delinea's filter matrix: refuse what the Cloud Connector refuses, compile the rest to SQL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from scim2_models import ScimFilter
from scim2_models.exceptions import SCIMException
from scim2_models.path import Comparison, FilterNode, LogicalExpr, LogicalOperator

from ._errors import invalid_filter
from ._profile import ResourceRules


@dataclass(frozen=True, slots=True)
class Condition:
    """One accepted comparison: ``attribute`` is lower-cased (``user.display``), ``op`` is eq or co."""

    attribute: str
    op: str
    value: str


def parse_filter(rules: ResourceRules, text: str | None, *, strict_literal: bool = False) -> list[Condition]:
    """The conditions of a filter the Delinea rules accept, all joined by ``and``.

    Raises a 400 ``invalidFilter`` ScimError for bad syntax, ``or``/``not``/``pr``, an operator or
    attribute outside the matrix, and for a missing filter where the resource type requires one.
    ``strict_literal`` reads each value as the characters up to the next ``"``, decoding no escape.
    """
    if text is None or not text.strip():
        if rules.filter_required:
            raise invalid_filter(f"{rules.endpoint} cannot be listed without a filter")
        return []
    if strict_literal:
        return [_check(rules, *comparison) for comparison in _literal_comparisons(text)]
    simple = _simple_comparison(text)
    if simple is not None:
        return [_check(rules, *simple)]
    try:
        root = ScimFilter(text).ast
    except (SCIMException, ValueError) as exc:
        raise invalid_filter(f"the filter is not valid SCIM syntax: {exc}") from None
    return [_condition(rules, node) for node in _and_terms(root)]


# The lookup a client makes before each create (`userName eq "..."`) is the hot path: a plain
# comparison is read here; anything else goes through the full scim2-models grammar.
_SIMPLE = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z][A-Za-z0-9_-]*)?)\s+(eq|co)\s+("(?:[^"\\]|\\.)*")\s*',
    re.IGNORECASE,
)


@lru_cache(maxsize=256)
def _simple_comparison(text: str) -> tuple[str, str, str] | None:
    match = _SIMPLE.fullmatch(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group(3))
    except ValueError:
        return None
    return match.group(1), match.group(2).lower(), value


_LITERAL_TERM = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z][A-Za-z0-9_-]*)?)\s+([A-Za-z]{2})\s+"([^"]*)"\s*(and\b|$)',
    re.IGNORECASE,
)


def _literal_comparisons(text: str) -> list[tuple[str, str, str]]:
    """``attr op "value"`` terms joined by ``and``, each value taken literally (no escape decoded)."""
    comparisons = []
    position = 0
    while position < len(text):
        match = _LITERAL_TERM.match(text, position)
        if match is None:
            raise invalid_filter(f"the filter is not valid SCIM syntax at character {position + 1}")
        comparisons.append((match.group(1), match.group(2).lower(), match.group(3)))
        position = match.end()
        if match.group(4) and position >= len(text):
            raise invalid_filter("the filter ends with 'and'")
    return comparisons


def _and_terms(node: FilterNode) -> list[FilterNode]:
    if isinstance(node, LogicalExpr):
        if node.op != LogicalOperator.and_:
            raise invalid_filter("only 'and' may combine filter expressions")
        return [term for child in node.terms for term in _and_terms(child)]
    return [node]


def _condition(rules: ResourceRules, node: FilterNode) -> Condition:
    if not isinstance(node, Comparison):
        raise invalid_filter(f"unsupported filter expression: {type(node).__name__}")
    path = node.attr_path
    if path.uri is not None and path.uri.lower() != rules.schema.lower():
        raise invalid_filter(f"{rules.endpoint} cannot be filtered on extension attributes")
    attribute = path.attr + (f".{path.sub_attr}" if path.sub_attr else "")
    return _check(rules, attribute, node.op.value.lower(), node.value)


def _check(rules: ResourceRules, attribute: str, op: str, value: object) -> Condition:
    attribute = attribute.lower()
    accepted = rules.filters.get(attribute)
    if accepted is None:
        raise invalid_filter(f"{rules.endpoint} cannot be filtered on {attribute}")
    if op not in accepted:
        raise invalid_filter(f"{rules.endpoint} cannot be filtered with {attribute} {op}")
    if not isinstance(value, str):
        raise invalid_filter(f"the value compared with {attribute} must be a string")
    return Condition(attribute, op, value)
