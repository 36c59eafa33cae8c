"""Look-ups by a matching attribute: raw UTF-8 values, a safe fragment for values a target cannot match,
an exact match on the client — against the emulator in strict-literal mode and against scim2-server."""

from __future__ import annotations

import json
from urllib.parse import unquote

import httpx
import pytest

from scim_pipeline.emulator import EmulatorServer
from scim_pipeline.scim import DELINEA, RFC7644, AmbiguousMatchError, FilterRefused, PaginationError, ScimClient
from scim_pipeline.scim.filters import lookup_filter
from scim_pipeline.scim.lookup import is_case_exact, lookup_forms, same_value
from scim_pipeline.scim.target_quirks import TargetQuirks

from .emulated_target import USER_SCHEMA, emulated, emulator_settings, scim_requests
from .loopback import LoopbackScimServer
from .mock_service import MockScim, list_response, loopback_settings, mock_settings, scim_error, user_payload

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


# -- look-ups that degrade until the target accepts them ------------------------------------------------------------


def _refusing(operators: set[str], users: list[dict[str, object]]) -> tuple[MockScim, list[str]]:
    """A target answering 400 invalidFilter to any filter using one of ``operators``; it filters the rest for real."""
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        text = request.url.params.get("filter")
        if not request.url.path.endswith("/Users"):
            return scim_error(404)
        if text is None:
            start = int(request.url.params["startIndex"])
            count = int(request.url.params["count"])
            return list_response(users[start - 1 : start - 1 + count], len(users), start)
        sent.append(text)
        attribute, operator, operand = text.split(" ", 2)
        if operator in operators:
            return scim_error(400, "invalidFilter", f"the operator {operator} is not supported")
        wanted = json.loads(operand).casefold()
        compare = {
            "eq": lambda v: v == wanted,
            "co": lambda v: wanted in v,
            "ew": lambda v: v.endswith(wanted),
            "sw": lambda v: v.startswith(wanted),
        }[operator]
        found = [u for u in users if compare(str(u[attribute]).casefold())]
        return list_response(found, len(found))

    return MockScim(answer), sent


async def test_a_refused_eq_degrades_to_co_and_the_next_look_up_starts_there() -> None:
    users: list[dict[str, object]] = [{"id": "1", "userName": "ann@example.test"}, {"id": "2", "userName": "nn@x"}]
    service, sent = _refusing({"eq"}, users)
    async with ScimClient(mock_settings(profile="rfc7644"), transport=service.transport) as client:
        found = await client.find_one("Users", "userName", "ANN@example.test")
        again = await client.find_one("Users", "userName", "nobody@example.test")
        saved = client.quirks.to_dict()
    assert found is not None
    assert found["id"] == "1"
    assert again is None
    assert sent == [
        'userName eq "ANN@example.test"',
        'userName co "ANN@example.test"',
        'userName co "nobody@example.test"',
    ]
    assert saved["refused_operators"] == [{"resource_type": "Users", "attribute": "username", "operators": ["eq"]}]


async def test_eq_co_and_ew_refused_degrade_to_a_listing_matched_exactly() -> None:
    users: list[dict[str, object]] = [{"id": str(i), "userName": f"user{i}@example.test"} for i in range(250)]
    service, sent = _refusing({"eq", "co", "ew", "sw"}, users)
    async with ScimClient(mock_settings(profile="rfc7644"), transport=service.transport) as client:
        found = await client.find_one("Users", "userName", "USER217@example.test")
        requests_before = len(service.scim_requests)
        await client.find_one("Users", "userName", "user3@example.test")
        second = service.scim_requests[requests_before:]
    assert found is not None
    assert found["id"] == "217"
    assert sent == [f'userName {op} "USER217@example.test"' for op in ("eq", "co", "ew")]
    # The next look-up lists at once: no filter is sent again.
    second = [request for request in second if request.url.path.endswith("/Users")]
    assert all("filter" not in request.url.params for request in second)
    assert len(second) == 3  # 250 users, 100 a page


async def test_a_listing_look_up_is_bounded_and_names_the_setting() -> None:
    users: list[dict[str, object]] = [{"id": str(i), "userName": f"u{i}"} for i in range(1000)]
    service, _ = _refusing({"eq", "co", "ew", "sw"}, users)
    settings = mock_settings(profile="rfc7644", lookup_max_pages=3)
    async with ScimClient(settings, transport=service.transport) as client:
        with pytest.raises(PaginationError, match="SCIM_LOOKUP_MAX_PAGES=3"):
            await client.find_one("Users", "userName", "u999")
    listed = [r for r in service.scim_requests if r.url.path.endswith("/Users") and "filter" not in r.url.params]
    assert len(listed) == 4  # the fourth page proves there is more than SCIM_LOOKUP_MAX_PAGES can read


def test_a_quoted_value_tries_its_fragment_forms_and_never_an_unescapable_eq() -> None:
    forms = lookup_forms(RFC7644, TargetQuirks(), "Users", "userName", 'o"brien@example.test')
    assert forms == [("ew", "brien@example.test"), ("co", "brien@example.test")]
    quirks = TargetQuirks()
    quirks.record_refused_operator("Users", "userName", "ew")
    assert lookup_forms(RFC7644, quirks, "Users", "userName", 'o"brien@example.test') == [("co", "brien@example.test")]


def test_delinea_look_ups_stay_inside_its_filter_matrix() -> None:
    assert lookup_forms(DELINEA, TargetQuirks(), "Users", "userName", "ann@example.test") == [
        ("eq", "ann@example.test"),
        ("co", "ann@example.test"),
    ]
    assert lookup_forms(DELINEA, TargetQuirks(), "Users", "userName", 'o"brien@x') == [("co", "brien@x")]
    with pytest.raises(FilterRefused):
        lookup_forms(DELINEA, TargetQuirks(), "Users", "externalId", "e1")
