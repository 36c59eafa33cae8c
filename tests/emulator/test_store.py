"""The SQLite store on its own: files written by earlier versions, and direct seeding for tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scim_pipeline.emulator import ResourceStore


def test_a_file_from_an_earlier_emulator_gains_member_display(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE memberships (group_id TEXT NOT NULL, user_id TEXT NOT NULL,"
        " PRIMARY KEY (group_id, user_id)) WITHOUT ROWID"
    )
    conn.commit()
    conn.close()
    store = ResourceStore(path)
    try:
        ada = store.create("Users", {"userName": "ada"})
        group = store.create("Groups", {"displayName": "Admins", "members": [{"value": ada["id"], "display": "Ada"}]})
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
