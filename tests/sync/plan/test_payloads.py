"""Attribute-path values become SCIM bodies and minimal PATCH operations (never a PUT)."""

from __future__ import annotations

import pandas as pd

from scim_pipeline.sync.plan.payloads import (
    CORE_USER_SCHEMA,
    ENTERPRISE_USER_SCHEMA,
    group_body,
    parse_path,
    patch_operations,
    resource_attrs,
    user_body,
)

EMAIL = 'emails[type eq "work"].value'
DEPARTMENT = f"{ENTERPRISE_USER_SCHEMA}:department"
MANAGER = f"{ENTERPRISE_USER_SCHEMA}:manager"


def test_user_body_nests_sub_attributes_and_typed_emails() -> None:
    body, written = user_body(
        {"userName": "alice", "name.givenName": "Alice", EMAIL: "a@example.com", "active": True, "title": pd.NA}
    )
    assert body == {
        "schemas": [CORE_USER_SCHEMA],
        "userName": "alice",
        "name": {"givenName": "Alice"},
        "emails": [{"type": "work", "primary": True, "value": "a@example.com"}],
        "active": True,
    }
    assert written == {"userName": "alice", "name.givenName": "Alice", EMAIL: "a@example.com", "active": True}


def test_enterprise_attributes_add_the_extension_schema() -> None:
    body, _ = user_body({"userName": "alice", DEPARTMENT: "Finance"})
    assert body["schemas"] == [CORE_USER_SCHEMA, ENTERPRISE_USER_SCHEMA]
    assert body[ENTERPRISE_USER_SCHEMA] == {"department": "Finance"}


def test_manager_key_becomes_the_managers_scim_id() -> None:
    body, written = user_body(
        {"userName": "bob", MANAGER: "Alice"}, resolve_manager=lambda key: {"alice": "id-1"}.get(key.casefold())
    )
    assert body[ENTERPRISE_USER_SCHEMA] == {"manager": {"value": "id-1"}}
    assert written[MANAGER] == "Alice"


def test_unresolvable_manager_is_left_out_and_not_recorded_as_written() -> None:
    body, written = user_body({"userName": "bob", MANAGER: "ghost"}, resolve_manager={}.get)
    assert body["schemas"] == [CORE_USER_SCHEMA]
    assert ENTERPRISE_USER_SCHEMA not in body
    assert MANAGER not in written


def test_group_body_never_carries_members() -> None:
    assert group_body({"displayName": "Admins", "externalId": pd.NA}) == {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Admins",
    }


def test_patch_replaces_changed_and_removes_emptied_values_only() -> None:
    old = {"userName": "alice", "title": "Engineer", DEPARTMENT: "R&D", "name.givenName": "Alice"}
    new = {"userName": "alice", "title": "Manager", DEPARTMENT: None, "name.givenName": "Alice"}
    operations, written = patch_operations(old, new)
    assert operations == [
        {"op": "replace", "path": "title", "value": "Manager"},
        {"op": "remove", "path": DEPARTMENT},
    ]
    assert written == {"userName": "alice", "title": "Manager", "name.givenName": "Alice"}


def test_first_work_email_is_added_not_replaced() -> None:
    operations, _ = patch_operations({}, {EMAIL: "a@example.com"})
    assert operations == [{"op": "add", "path": "emails", "value": [{"type": "work", "value": "a@example.com"}]}]


def test_changed_and_removed_work_email_use_the_filtered_path() -> None:
    changed, _ = patch_operations({EMAIL: "a@example.com"}, {EMAIL: "b@example.com"})
    removed, _ = patch_operations({EMAIL: "a@example.com"}, {EMAIL: None})
    assert changed == [{"op": "replace", "path": EMAIL, "value": "b@example.com"}]
    assert removed == [{"op": "remove", "path": 'emails[type eq "work"]'}]


def test_unchanged_values_yield_no_operation() -> None:
    assert patch_operations({"active": True, "title": "x"}, {"active": True, "title": "x"}) == (
        [],
        {"active": True, "title": "x"},
    )


def test_unresolved_manager_in_a_patch_stays_unwritten() -> None:
    operations, written = patch_operations({}, {MANAGER: "ghost", "title": "x"}, resolve_manager={}.get)
    assert operations == [{"op": "replace", "path": "title", "value": "x"}]
    assert MANAGER not in written


def test_resource_attrs_reads_a_target_resource_back() -> None:
    resource = {
        "id": "u1",
        "userName": "alice",
        "name": {"givenName": "Alice"},
        "emails": [{"type": "home", "value": "h@example.com"}, {"type": "work", "value": "w@example.com"}],
        "active": False,
        ENTERPRISE_USER_SCHEMA: {"department": "R&D", "manager": {"value": "m1"}},
    }
    attrs = resource_attrs(
        resource,
        ["userName", "name.givenName", "name.familyName", EMAIL, "active", DEPARTMENT, MANAGER],
        manager_key={"m1": "boss"}.get,
    )
    assert attrs == {
        "userName": "alice",
        "name.givenName": "Alice",
        EMAIL: "w@example.com",
        "active": False,
        DEPARTMENT: "R&D",
        MANAGER: "boss",
    }


def test_parse_path_understands_the_mapping_forms() -> None:
    assert parse_path(DEPARTMENT).schema == ENTERPRISE_USER_SCHEMA
    assert parse_path(EMAIL).type_value == "work"
    assert parse_path("name.familyName").sub == "familyName"


# -- e-mails without type ------------------------------------------------------------------------------------------


def test_the_plain_email_form_writes_value_and_primary_without_type_and_patches_the_primary_entry() -> None:
    from scim_pipeline.sync.plan.payloads import PRIMARY_EMAIL, patch_operations, resource_attrs, user_body

    body, _ = user_body({"userName": "zoe", PRIMARY_EMAIL: "zoe@example.test"})
    assert body["emails"] == [{"value": "zoe@example.test", "primary": True}]
    operations, _ = patch_operations({PRIMARY_EMAIL: "zoe@example.test"}, {PRIMARY_EMAIL: "z@example.test"})
    assert operations == [{"op": "replace", "path": "emails[primary eq true].value", "value": "z@example.test"}]
    first, _ = patch_operations({}, {PRIMARY_EMAIL: "z@example.test"})
    assert first == [{"op": "add", "path": "emails", "value": [{"value": "z@example.test", "primary": True}]}]
    removed, _ = patch_operations({PRIMARY_EMAIL: "z@example.test"}, {PRIMARY_EMAIL: ""})
    assert removed == [{"op": "remove", "path": "emails[primary eq true]"}]
    stored = {"emails": [{"value": "home@x.test"}, {"value": "z@example.test", "primary": True}]}
    assert resource_attrs(stored, [PRIMARY_EMAIL]) == {PRIMARY_EMAIL: "z@example.test"}


def test_the_single_email_form_writes_one_address_whole() -> None:
    from scim_pipeline.sync.plan.payloads import SINGLE_EMAIL, patch_operations, resource_attrs, user_body

    body, _ = user_body({"userName": "zoe", SINGLE_EMAIL: "zoe@example.test"})
    assert body["emails"] == [{"value": "zoe@example.test", "primary": True}]
    operations, _ = patch_operations({SINGLE_EMAIL: "zoe@example.test"}, {SINGLE_EMAIL: "z@example.test"})
    assert operations == [{"op": "replace", "path": "emails", "value": [{"value": "z@example.test", "primary": True}]}]
    assert resource_attrs({"emails": [{"value": "only@x.test"}]}, [SINGLE_EMAIL]) == {SINGLE_EMAIL: "only@x.test"}


def test_the_email_form_comes_from_the_mapping_file_or_else_the_target(tmp_path: object) -> None:
    from pathlib import Path

    from scim_pipeline.sync.plan.mapping import WORK_EMAIL, Mapping, load_mapping

    assert WORK_EMAIL in Mapping().users.rules()
    assert "emails.value" in Mapping().with_email_form("single").users.rules()
    path = Path(str(tmp_path)) / "mapping.yaml"
    path.write_text("users:\n  email_form: plain\n")
    chosen = load_mapping(path).with_email_form("single")
    rules = chosen.users.rules()
    assert "emails[primary eq true].value" in rules
    assert WORK_EMAIL not in rules
    assert rules["emails[primary eq true].value"].column == "email"
    assert chosen.source == str(path)
