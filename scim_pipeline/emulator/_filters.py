"""Delinea's filter matrix: refuse what the Cloud Connector refuses, compile the rest to SQL."""

from __future__ import annotations

from dataclasses import dataclass

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


def parse_filter(rules: ResourceRules, text: str | None) -> list[Condition]:
    """The conditions of a filter the Delinea rules accept, all joined by ``and``.

    Raises a 400 ``invalidFilter`` ScimError for bad syntax, ``or``/``not``/``pr``, an operator or
    attribute outside the matrix, and for a missing filter where the resource type requires one.
    """
    if text is None or not text.strip():
        if rules.filter_required:
            raise invalid_filter(f"{rules.endpoint} cannot be listed without a filter")
        return []
    try:
        root = ScimFilter(text).ast
    except (SCIMException, ValueError) as exc:
        raise invalid_filter(f"the filter is not valid SCIM syntax: {exc}") from None
    return [_condition(rules, node) for node in _and_terms(root)]


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
    attribute = path.attr.lower() + (f".{path.sub_attr.lower()}" if path.sub_attr else "")
    op = node.op.value.lower()
    accepted = rules.filters.get(attribute)
    if accepted is None:
        raise invalid_filter(f"{rules.endpoint} cannot be filtered on {attribute}")
    if op not in accepted:
        raise invalid_filter(f"{rules.endpoint} cannot be filtered with {attribute} {op}")
    if not isinstance(node.value, str):
        raise invalid_filter(f"the value compared with {attribute} must be a string")
    return Condition(attribute, op, node.value)
