"""DataFrames from a user's own asset as the roster: typed values become the same text as every other source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scim_pipeline.sources import TEXT, RosterError, RosterSource
from scim_pipeline.sources.dataframe import DataFrameRosterSource
from scim_pipeline.sync.plan.mapping import build_roster


def hr_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_name": ["ann", "bob", "cid"],
            "email": ["ann@hr.example", None, "cid@hr.example"],
            "active": [True, False, True],
            "employee_number": pd.array([7, 8, None], dtype="Int64"),
            "salary": [1.5, np.nan, 3.0],
            "hired": pd.to_datetime(["2024-01-02", "2024-03-04", None]),
            "manager": [None, "ann", "ann"],
        },
        index=[10, 20, 30],
    )


def test_typed_columns_become_text() -> None:
    users = DataFrameRosterSource(users=hr_frame()).read().users.frame

    assert users.index.tolist() == [1, 2, 3]
    assert all(dtype == TEXT for dtype in users.dtypes)
    assert users["active"].tolist() == ["true", "false", "true"]
    assert users["employee_number"].tolist()[:2] == ["7", "8"]
    assert users["employee_number"].isna().tolist() == [False, False, True]
    assert users["salary"].tolist()[0] == "1.5"
    assert pd.isna(users["salary"].tolist()[1])
    assert users["hired"].tolist()[0] == "2024-01-02T00:00:00"
    assert pd.isna(users["email"].tolist()[1])


def test_the_frames_pass_the_default_mapping_with_groups_and_memberships() -> None:
    source = DataFrameRosterSource(
        users=hr_frame(),
        groups=pd.DataFrame({"group_name": ["Finance"], "external_id": ["F-1"]}),
        memberships=pd.DataFrame({"group_name": ["Finance", "Finance"], "user_name": ["ann", "cid"]}),
    )

    raw, report = source.read_with_report()
    roster = build_roster(raw, shards=1)

    assert isinstance(source, RosterSource)
    assert roster.rejected.empty
    assert len(roster.memberships) == 2
    assert report.rows == {"users": 3, "groups": 1, "memberships": 2}


def test_a_list_column_is_unsupported_not_stringified() -> None:
    frame = hr_frame().assign(roles=[["a"], ["b"], []])

    users = DataFrameRosterSource(users=frame).read().users

    assert "roles" not in users.frame.columns
    assert "roles" in users.unsupported_columns


def test_something_else_than_a_dataframe_is_refused() -> None:
    with pytest.raises(RosterError, match="not a pandas DataFrame"):
        DataFrameRosterSource(users=[{"user_name": "ann"}]).read()  # type: ignore[arg-type]


def test_a_column_twice_is_refused() -> None:
    frame = pd.DataFrame([["ann", "x"]], columns=["user_name", "user_name "])

    with pytest.raises(RosterError, match="twice"):
        DataFrameRosterSource(users=frame).read()
