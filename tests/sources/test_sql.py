"""The SQL source on SQLite: tables or queries, values as text, errors that quote no password."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources import TEXT, RosterError
from scim_pipeline.sources.sql import SqlRosterSource, SqlSettings
from scim_pipeline.sync.plan.mapping import build_roster


@pytest.fixture
def hr_database(tmp_path: Path) -> str:
    path = tmp_path / "hr.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE staff (login TEXT, first TEXT, last TEXT, mail TEXT, enabled BOOLEAN, badge INTEGER,
                                salary REAL, boss TEXT, started DATE);
            CREATE TABLE teams (group_name TEXT, external_id TEXT);
            CREATE TABLE team_members (group_name TEXT, user_name TEXT);
            INSERT INTO teams VALUES ('Finance', 'T-1'), ('Audit', 'T-2');
            """
        )
        rows = [
            (
                f"emp{i:03d}",
                f"First{i}",
                f"Last{i}",
                f"emp{i:03d}@hr.example",
                i % 9 != 8,
                100 + i,
                1000.0,
                "emp000" if i else None,
                "2024-02-01",
            )
            for i in range(60)
        ]
        db.executemany("INSERT INTO staff VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO team_members VALUES (?, ?)", [("Finance", f"emp{i:03d}") for i in range(0, 60, 3)])
    return f"sqlite:///{path}"


USERS_QUERY = """
    SELECT login AS user_name, first AS given_name, last AS family_name, mail AS email,
           CASE WHEN enabled THEN 'true' ELSE 'false' END AS active, badge AS employee_number, boss AS manager,
           salary, started
    FROM staff ORDER BY login
"""


def test_queries_and_tables_make_the_default_roster(hr_database: str) -> None:
    settings = SqlSettings(
        url=SecretStr(hr_database), users_query=USERS_QUERY, groups_table="teams", memberships_table="team_members"
    )

    raw, report = SqlRosterSource(settings).read_with_report()

    users = raw.users.frame
    assert len(users) == 60
    assert users.index[0] == 1
    assert all(dtype == TEXT for dtype in users.dtypes)
    first = users.iloc[1]
    assert first["user_name"] == "emp001"
    assert first["employee_number"] == "101"
    assert first["salary"] == "1000.0"
    assert first["manager"] == "emp000"
    assert users.iloc[8]["active"] == "false"
    assert raw.groups is not None
    assert raw.groups.frame["group_name"].tolist() == ["Finance", "Audit"]
    assert report.rows == {"users": 60, "groups": 2, "memberships": 20}
    roster = build_roster(raw, shards=1)
    assert roster.rejected.empty
    assert len(roster.memberships) == 20


def test_a_null_is_no_value_and_a_boolean_column_is_true_or_false(hr_database: str) -> None:
    settings = SqlSettings(
        url=SecretStr(hr_database), users_query="SELECT login AS user_name, enabled, boss FROM staff"
    )

    users = SqlRosterSource(settings).read().users.frame

    assert users.iloc[0]["boss"] is pd.NA
    assert set(users["enabled"]) == {"1", "0"}  # SQLite stores booleans as integers: cast in SQL for true/false


def test_a_failing_query_names_the_database_but_not_its_password(tmp_path: Path) -> None:
    settings = SqlSettings(
        url=SecretStr(f"sqlite:///{tmp_path / 'empty.sqlite'}"), users_query="SELECT * FROM no_such_table"
    )

    with pytest.raises(RosterError, match=r"empty\.sqlite failed \(OperationalError\)"):
        SqlRosterSource(settings).read()


def test_the_password_in_the_url_is_masked() -> None:
    settings = SqlSettings(url=SecretStr("postgresql://reader:hunter2-secret@db.example/hr"), users_table="hr.staff")

    assert "hunter2-secret" not in settings.display_url()
    assert "hunter2-secret" not in repr(SqlRosterSource(settings)) + repr(settings)


def test_a_table_and_a_query_for_the_same_table_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        SqlSettings.from_env(
            {"SCIM_SQL_URL": "sqlite://", "SCIM_SQL_USERS_TABLE": "staff", "SCIM_SQL_USERS_QUERY": "SELECT 1"}
        )


def test_the_users_table_is_required() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_SQL_USERS_TABLE or SCIM_SQL_USERS_QUERY"):
        SqlSettings.from_env({"SCIM_SQL_URL": "sqlite://"})


def test_a_duplicate_column_is_an_error(hr_database: str) -> None:
    settings = SqlSettings(
        url=SecretStr(hr_database), users_query="SELECT login AS user_name, mail AS user_name FROM staff"
    )

    with pytest.raises(RosterError, match="twice"):
        SqlRosterSource(settings).read()
