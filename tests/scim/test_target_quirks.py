"""TargetQuirks: attributes a target drops (from its answers and its /Schemas), refused PATCH forms,
reported once and kept per target through to_dict/from_dict."""

from __future__ import annotations

import logging

import pytest

from scim_pipeline.scim import ScimClient, discover
from scim_pipeline.scim.target_quirks import PatchForm, PatchKind, TargetQuirks, written_paths

from .emulated_target import ENTERPRISE, USER_SCHEMA, emulated, emulator_settings

DEPARTMENT = f"{ENTERPRISE}:department"
MANAGER = f"{ENTERPRISE}:manager"
WORK_EMAIL = 'emails[type eq "work"].value'


def _user(user_name: str) -> dict[str, object]:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": user_name,
        "title": "Engineer",
        "name": {"givenName": "Zoë", "familyName": "Øster"},
        "emails": [{"type": "work", "value": f"{user_name}@example.com", "primary": True}],
        ENTERPRISE: {"department": "R&D", "manager": {"value": "m-1"}},
    }


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "does not store" in r.getMessage()
    ]


def test_written_paths_use_the_sync_notation() -> None:
    assert written_paths(_user("a")) == [
        "userName",
        "title",
        "name.givenName",
        "name.familyName",
        WORK_EMAIL,
        DEPARTMENT,
        MANAGER,
    ]


def test_an_attribute_missing_from_the_answer_is_dropped_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    quirks = TargetQuirks()
    for name in ("a", "b", "c"):
        body = _user(name)
        answer = {k: v for k, v in body.items() if k not in ("title", ENTERPRISE)} | {"id": name}
        quirks.observe_write("Users", body, answer)
    assert quirks.dropped_attributes("Users") == {"title", DEPARTMENT, MANAGER}
    assert sorted(_warnings(caplog)) == sorted(
        f"Users: the target does not store {path} (its answers to writes leave it out); "
        "it is left out of drift and diffs"
        for path in ("title", DEPARTMENT, MANAGER)
    )


def test_an_answer_without_a_body_says_nothing() -> None:
    quirks = TargetQuirks()
    assert quirks.observe_write("Users", _user("a"), None) == frozenset()
    assert quirks.observe_patch("Groups", [{"op": "replace", "path": "displayName", "value": "x"}], None) == frozenset()
    assert quirks.dropped_attributes("Users") == frozenset()


def test_an_attribute_seen_stored_later_is_no_longer_dropped() -> None:
    quirks = TargetQuirks()
    body = _user("a")
    quirks.observe_write("Users", body, {"id": "1", "userName": "a"})
    assert "title" in quirks.dropped_attributes("Users")
    quirks.observe_patch("Users", [{"op": "replace", "path": "title", "value": "CTO"}], {"id": "1", "title": "CTO"})
    assert "title" not in quirks.dropped_attributes("Users")


def test_quirks_survive_to_dict_and_from_dict_without_warning_again(caplog: pytest.LogCaptureFixture) -> None:
    quirks = TargetQuirks()
    quirks.observe_write("Users", {"userName": "a", "title": "x"}, {"id": "1", "userName": "a"})
    quirks.record_refused("Users", PatchKind.ATTRIBUTES, PatchForm.ATTRIBUTE_PATH)
    quirks.record_working("Users", PatchKind.ATTRIBUTES, PatchForm.REPLACE)
    caplog.clear()
    restored = TargetQuirks.from_dict(quirks.to_dict())
    restored.observe_write("Users", {"userName": "b", "title": "x"}, {"id": "2", "userName": "b"})
    assert restored.dropped_attributes("Users") == {"title"}
    assert restored.working_form("Users", PatchKind.ATTRIBUTES) is PatchForm.REPLACE
    assert restored.refused_forms("Users", PatchKind.ATTRIBUTES) == {PatchForm.ATTRIBUTE_PATH}
    assert restored.to_dict() == quirks.to_dict()
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    "saved",
    [None, {}, {"version": 99, "dropped": {"Users": ["title"]}}, {"version": 1, "patch_forms": [{"kind": "?"}]}],
)
def test_unreadable_saved_quirks_start_empty(saved: object) -> None:
    quirks = TargetQuirks.from_dict(saved)  # type: ignore[arg-type]
    assert quirks.dropped_attributes("Users") == frozenset()
    assert quirks.to_dict()["patch_forms"] == []


async def test_attributes_the_target_drops_are_listed_after_writes_and_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="scim_pipeline.scim")
    with emulated(drop_attributes=("title", DEPARTMENT)) as server:
        async with ScimClient(emulator_settings(server)) as client:
            created = [await client.create("Users", _user(f"user{i}")) for i in range(5)]
            assert created[0].scim_id is not None
            await client.patch("Users", created[0].scim_id, [{"op": "replace", "path": "title", "value": "CTO"}])
            dropped = client.quirks.dropped_attributes("Users")
    assert dropped == {"title", DEPARTMENT}
    assert len(_warnings(caplog)) == 2


async def test_attributes_missing_from_the_served_schemas_are_dropped_before_any_write() -> None:
    with emulated(drop_attributes=("title", ENTERPRISE)) as server:
        async with ScimClient(emulator_settings(server)) as client:
            await discover(client)
            dropped = client.quirks.dropped_attributes("Users", among=["userName", "title", WORK_EMAIL, DEPARTMENT])
            kept_sub = client.quirks.schema_defines("Users", "name.givenName")
    assert dropped == {"title", DEPARTMENT}
    assert kept_sub is True
