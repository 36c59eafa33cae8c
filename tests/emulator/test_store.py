"""The SQLite store on its own: files written by earlier versions, and direct seeding for tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scim_pipeline.emulator import ResourceStore
from scim_pipeline.emulator._filters import Condition

_FIRST_SCHEMA = """
CREATE TABLE resources (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    unique_key TEXT, display TEXT, container_ref TEXT, user_ref TEXT, group_ref TEXT,
    body TEXT NOT NULL, created TEXT NOT NULL, last_modified TEXT NOT NULL, version INTEGER NOT NULL);
CREATE UNIQUE INDEX resources_unique ON resources (type, unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX resources_user_ref ON resources (user_ref) WHERE user_ref IS NOT NULL;
CREATE TABLE memberships (group_id TEXT NOT NULL, user_id TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)) WITHOUT ROWID;
CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, expires_at REAL NOT NULL);
INSERT INTO resources VALUES (1, 'u-1', 'Users', 'ada', 'Ada Lovelace', NULL, NULL, NULL,
    '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada","displayName":"Ada Lovelace"}',
    '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1);
"""


def test_a_file_from_the_first_emulator_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_FIRST_SCHEMA)
    conn.close()
    store = ResourceStore(path)
    try:
        found = store.search("Users", [Condition("displayname", "eq", "ADA LOVELACE")])
        assert [user["id"] for user in found.resources] == ["u-1"]
        assert store.search("Users", count=0).total == 1
        group = store.create("Groups", {"displayName": "Admins", "members": [{"value": "u-1", "display": "Ada"}]})
        assert store.get("Groups", group["id"])["members"][0]["display"] == "Ada"
    finally:
        store.close()


def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    first, second = ResourceStore(tmp_path / "t.db"), ResourceStore(tmp_path / "t.db")
    try:
        ada = first.create("Users", {"userName": "ada"})
        assert second.get("Users", ada["id"])["userName"] == "ada"
        second.delete("Users", ada["id"])
        assert first.count("Users") == 0
    finally:
        first.close()
        second.close()


def test_search_pages_and_counts() -> None:
    store = ResourceStore()
    try:
        for index in range(5):
            store.create("Users", {"userName": f"user{index}"})
        page = store.search("Users", start_index=2, count=2)
        assert page.total == 5
        assert [user["userName"] for user in page.resources] == ["user1", "user2"]
        assert store.dump()["Users"][0]["meta"]["location"].startswith("/scim/v2/Users/")
    finally:
        store.close()


def test_paging_stays_exact_when_resources_are_deleted_between_pages() -> None:
    store = ResourceStore()
    try:
        ids = [store.create("Users", {"userName": f"user{index}"})["id"] for index in range(10)]
        first = store.search("Users", start_index=1, count=3).resources
        assert [user["userName"] for user in first] == ["user0", "user1", "user2"]
        store.delete("Users", ids[1])
        # What an index-paginated server answers: the 4th of the remaining users.
        second = store.search("Users", start_index=4, count=3)
        assert [user["userName"] for user in second.resources] == ["user4", "user5", "user6"]
        assert second.total == 9
        third = store.search("Users", start_index=7, count=3)
        assert [user["userName"] for user in third.resources] == ["user7", "user8", "user9"]
        store.create("Users", {"userName": "user10"})
        assert [user["userName"] for user in store.search("Users", start_index=10, count=3).resources] == ["user10"]
    finally:
        store.close()


def test_filters_use_the_casefolded_columns() -> None:
    store = ResourceStore()
    try:
        store.create("Users", {"userName": "ada", "displayName": "Ada Lovelace"})
        store.create("Users", {"userName": "grace", "displayName": "Grace Hopper"})
        assert store.search("Users", [Condition("displayname", "co", "LOVE")]).total == 1
        assert store.search("Users", [Condition("username", "eq", "GRACE")]).total == 1
        assert store.search("Groups", [Condition("username", "eq", "ada")]).total == 0
        payroll = store.create("Containers", {"name": "Payroll", "displayName": "Payroll Secrets"})
        assert store.search("Containers", [Condition("displayname", "eq", "payroll secrets")]).total == 1
        assert store.search("Containers", [Condition("name", "co", "roll")]).resources[0]["id"] == payroll["id"]
    finally:
        store.close()
