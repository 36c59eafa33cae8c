"""Filters: built with scim2-models, values always JSON-quoted, checked against the profile."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scim2_models import ScimFilter
from scim2_models.path import CompareOperator, Comparison, LogicalExpr

from scim_pipeline.scim import (
    DELINEA,
    RFC7644,
    ConfigurationError,
    FilterRefused,
    and_filters,
    check_filter,
    eq_filter,
)

SEED_PAIRS = {
    "Users": ["userName eq", "userName co", "displayName eq", "displayName co"],
    "Groups": ["userName eq", "userName co", "displayName eq", "displayName co"],
    "Containers": ["name eq", "name co", "displayName eq", "displayName co"],
    "ContainerPermissions": [
        "container.value eq",
        "user.display eq",
        "user.display co",
        "user.value eq",
        "group.display eq",
        "group.display co",
        "group.value eq",
    ],
    "PrivilegedData": [
        "privilegedData.value eq",
        "user.display eq",
        "user.display co",
        "user.value eq",
        "group.display eq",
        "group.display co",
        "group.value eq",
    ],
}


@pytest.mark.parametrize(
    ("resource_type", "pair"),
    [(rt, pair) for rt, pairs in SEED_PAIRS.items() for pair in pairs],
)
def test_every_pair_of_the_seed_passes_under_delinea(resource_type: str, pair: str) -> None:
    assert check_filter(DELINEA, resource_type, f'{pair} "x"') is not None


def test_attribute_names_and_operators_are_case_insensitive() -> None:
    check_filter(DELINEA, "Users", 'USERNAME EQ "a" AND displayname Co "b"')


def test_pairs_joined_by_and_pass() -> None:
    check_filter(DELINEA, "ContainerPermissions", 'container.value eq "c1" and user.value eq "u1"')


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ('createdDate gt "2024-01-01T00:00:00Z"', "createdDate gt"),
        ('meta.lastModified gt "2024-01-01T00:00:00Z"', "meta.lastModified gt"),
        ('lastModifiedDate eq "x"', "lastModifiedDate eq"),
        ('id eq "2819c223"', "id eq"),
        ('userName le "a"', "userName le"),
        ('userName sw "a"', "userName sw"),
        ('userName ew "a"', "userName ew"),
        ('userName gt "a"', "userName gt"),
        ('userName ge "a"', "userName ge"),
        ('userName lt "a"', "userName lt"),
        ('userName ne "a"', "userName ne"),
        ("userName pr", "userName pr"),
        ('userName eq "a" or userName eq "b"', "'or'"),
        ('not (userName eq "a")', "'not'"),
        ('emails[type eq "work"].value eq "a@b.c"', "value path"),
        ('externalId eq "42"', "externalId eq"),
        ("userName eq true", "non-string value"),
    ],
)
def test_everything_else_is_refused_naming_it_and_the_allowed_pairs(text: str, refused: str) -> None:
    with pytest.raises(FilterRefused) as caught:
        check_filter(DELINEA, "Users", text)
    message = str(caught.value)
    assert refused in message
    assert "userName eq/co, displayName eq/co, joined by 'and'" in message


def test_refusal_messages_never_contain_filter_values() -> None:
    with pytest.raises(FilterRefused) as caught:
        check_filter(DELINEA, "Users", 'userName eq "jane.doe" or userName eq "john.roe"')
    assert "jane.doe" not in str(caught.value)
    with pytest.raises(FilterRefused) as caught:
        check_filter(DELINEA, "Users", 'userName eq "jane.doe')  # unterminated
    assert "jane.doe" not in str(caught.value)


def test_container_permissions_cannot_be_listed_without_a_filter() -> None:
    with pytest.raises(FilterRefused, match="cannot list ContainerPermissions without a filter"):
        check_filter(DELINEA, "ContainerPermissions", None)
    assert check_filter(DELINEA, "Users", None) is None


def test_rfc7644_accepts_any_valid_filter() -> None:
    check_filter(RFC7644, "Users", 'userName sw "a" or not (title pr)')
    with pytest.raises(FilterRefused, match="not a valid SCIM filter"):
        check_filter(RFC7644, "Users", "userName eq")


def test_eq_filter_quotes_the_value_as_a_json_string() -> None:
    assert eq_filter("userName", 'x" or userName pr') == 'userName eq "x\\" or userName pr"'
    assert eq_filter("userName", "back\\slash") == 'userName eq "back\\\\slash"'
    assert eq_filter("container.value", "c1") == 'container.value eq "c1"'


def test_an_attribute_name_cannot_smuggle_syntax_in() -> None:
    with pytest.raises(ConfigurationError, match="not a SCIM attribute path"):
        eq_filter('userName eq "x" or userName', "y")


@given(st.text())
def test_no_roster_value_can_change_a_filters_meaning(value: str) -> None:
    ast = ScimFilter(str(eq_filter("userName", value))).ast
    assert isinstance(ast, Comparison)
    assert ast.op is CompareOperator.eq
    assert str(ast.attr_path) == "userName"
    assert ast.value == value


@given(st.text(), st.text())
def test_and_filters_keep_each_value_a_value(first: str, second: str) -> None:
    joined = and_filters(eq_filter("user.value", first), eq_filter("container.value", second))
    assert joined is not None
    ast = ScimFilter(str(joined)).ast
    assert isinstance(ast, LogicalExpr)
    assert [term.value for term in ast.terms if isinstance(term, Comparison)] == [first, second]
    check_filter(DELINEA, "ContainerPermissions", str(joined))


def test_and_filters_parenthesise_a_disjunction_and_skip_nothing() -> None:
    assert and_filters() is None
    assert and_filters(None, 'a eq "1"') == 'a eq "1"'
    assert and_filters('a eq "1"', 'b eq "2" or c eq "3"') == 'a eq "1" and (b eq "2" or c eq "3")'


def test_non_ascii_values_are_sent_as_raw_utf8_never_as_escapes() -> None:
    assert str(eq_filter("userName", "Zoë Øster")) == 'userName eq "Zoë Øster"'
    joined = and_filters(eq_filter("userName", "Zoë"), 'displayName co "Ø"')
    assert str(joined) == 'userName eq "Zoë" and displayName co "Ø"'


def test_quotes_backslashes_and_control_characters_are_still_escaped() -> None:
    text = str(eq_filter("userName", 'a"b\\c\nd'))
    assert text == 'userName eq "a\\"b\\\\c\\nd"'
    parsed = ScimFilter(text).ast
    assert isinstance(parsed, Comparison)
    assert parsed.value == 'a"b\\c\nd'
