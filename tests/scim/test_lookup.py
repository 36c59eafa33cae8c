"""Look-ups by a matching attribute: raw UTF-8 values, a safe fragment for values a target cannot match,
an exact match on the client — against the emulator in strict-literal mode and against scim2-server."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from scim_pipeline.emulator import EmulatorServer
from scim_pipeline.scim import DELINEA, RFC7644, AmbiguousMatchError, FilterRefused, ScimClient
from scim_pipeline.scim.filters import lookup_filter
from scim_pipeline.scim.lookup import is_case_exact, same_value

from .emulated_target import USER_SCHEMA, emulated, emulator_settings, scim_requests
from .loopback import LoopbackScimServer
from .mock_service import loopback_settings, user_payload

QUOTED = 'Zoë "Z" O\\Brien'


def _filters_sent(server: EmulatorServer) -> list[str]:
    queries = [record.query for record in scim_requests(server) if record.method == "GET"]
    return [
        unquote(part.split("=", 1)[1].replace("+", " "))
        for q in queries
        for part in q.split("&")
        if part.startswith("filter=")
    ]


def test_a_plain_value_is_looked_up_with_eq_in_raw_utf8() -> None:
    plan = lookup_filter(DELINEA, "Users", "userName", "Zoë Øster")
    assert plan.exact
    assert str(plan.filter) == 'userName eq "Zoë Øster"'


def test_a_quoted_value_is_looked_up_by_its_longest_safe_fragment_with_an_allowed_operator() -> None:
    plan = lookup_filter(DELINEA, "Users", "userName", QUOTED)
    assert not plan.exact
    assert str(plan.filter) == 'userName co "Brien"'  # Delinea allows eq/co only


def test_a_fragment_starting_the_value_uses_sw_where_the_profile_allows_it() -> None:
    assert str(lookup_filter(RFC7644, "Users", "userName", 'alexander"x').filter) == 'userName sw "alexander"'
    assert str(lookup_filter(RFC7644, "Users", "userName", "x\\alexander").filter) == 'userName ew "alexander"'


def test_without_a_safe_fragment_or_an_allowed_comparison_the_value_is_sent_escaped() -> None:
    assert str(lookup_filter(DELINEA, "Users", "userName", '"\\"').filter) == 'userName eq "\\"\\\\\\""'
    permission = lookup_filter(DELINEA, "ContainerPermissions", "user.value", 'a"b')
    assert (str(permission.filter), permission.exact) == ('user.value eq "a\\"b"', True)


def test_an_attribute_the_profile_refuses_is_refused_before_any_request() -> None:
    with pytest.raises(FilterRefused):
        lookup_filter(DELINEA, "Users", "externalId", 'a"b')


def test_case_rules_follow_rfc7643() -> None:
    assert same_value("userName", "ZOË", "zoë")
    assert not same_value("externalId", "AB12", "ab12")
    assert is_case_exact("container.value")
    assert not is_case_exact("displayName")


async def test_non_ascii_names_are_found_on_a_strict_literal_target() -> None:
    with emulated(strict_literal_filters=True) as server:
        server.emulator.store.create("Users", {"userName": "Zoë Øster"})
        async with ScimClient(emulator_settings(server)) as client:
            found = await client.find_one("Users", "userName", "zoë øster")
        assert found is not None
        assert found["userName"] == "Zoë Øster"
        assert _filters_sent(server) == ['userName eq "zoë øster"']
        assert "%5Cu00" not in scim_requests(server)[0].query  # no \uXXXX escape on the wire


async def test_non_ascii_names_are_found_on_scim2_server(loopback: LoopbackScimServer) -> None:
    loopback.seed_users(["Zoë Øster", "Zoe Oster"])
    async with ScimClient(loopback_settings(loopback)) as client:
        found = await client.find_one("Users", "userName", "Zoë Øster")
    assert found is not None
    assert found["userName"] == "Zoë Øster"


async def test_a_quoted_backslashed_name_is_found_by_fragment_and_matched_exactly() -> None:
    with emulated(strict_literal_filters=True) as server:
        for name in (QUOTED, "Brien", 'Zoë "Z" O\\Brienne', "O'Brien"):
            server.emulator.store.create("Users", {"userName": name})
        async with ScimClient(emulator_settings(server)) as client:
            found = await client.find_one("Users", "userName", QUOTED)
            absent = await client.find_one("Users", "userName", 'Zoë "Y" O\\Brien')
        assert found is not None
        assert found["userName"] == QUOTED
        assert absent is None
        assert _filters_sent(server) == ['userName co "Brien"'] * 2


async def test_a_quoted_name_is_found_on_scim2_server(loopback: LoopbackScimServer) -> None:
    loopback.seed_users([QUOTED, "Brien"])
    async with ScimClient(loopback_settings(loopback)) as client:
        found = await client.find_one("Users", "userName", QUOTED)
    assert found is not None
    assert found["userName"] == QUOTED


async def test_two_exact_matches_are_ambiguous_even_after_a_fragment_look_up() -> None:
    with emulated() as server:
        server.emulator.store.create("Users", {"userName": "a", "displayName": 'Team "Blue"'})
        server.emulator.store.create("Users", {"userName": "b", "displayName": 'Team "Blue"'})
        async with ScimClient(emulator_settings(server)) as client:
            with pytest.raises(AmbiguousMatchError):
                await client.find_one("Users", "displayName", 'team "blue"')


async def test_a_lost_create_answer_for_a_quoted_name_is_adopted_not_posted_again() -> None:
    with emulated(strict_literal_filters=True) as server:
        server.emulator.force("drop-after")
        async with ScimClient(emulator_settings(server)) as client:
            result = await client.create("Users", {"schemas": [USER_SCHEMA], "userName": QUOTED})
        assert result.adopted
        assert result.resource is not None
        assert result.resource["userName"] == QUOTED
        assert server.emulator.store.count("Users") == 1
        assert [r.method for r in scim_requests(server)] == ["POST", "GET"]


async def test_a_lost_create_answer_for_a_non_ascii_name_is_adopted_on_scim2_server(
    loopback: LoopbackScimServer,
) -> None:
    loopback.faults.drop_after_apply = 1
    async with ScimClient(loopback_settings(loopback)) as client:
        result = await client.create("Users", user_payload("Zoë Øster"))
    assert result.adopted
    assert [u["userName"] for u in loopback.users()] == ["Zoë Øster"]
    assert loopback.scim_request_count("POST") == 1
