"""Validation of the roster: every bad row is set aside with a reason a person can act on; the rest proceed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scim_pipeline.sample_roster import SAMPLE_ROSTER
from scim_pipeline.sources import TEXT, FolderRosterSource, RawRoster, RawTable
from scim_pipeline.sync.plan.mapping import ENTERPRISE_USER, WORK_EMAIL, Mapping, Roster, build_roster, load_mapping
from scim_pipeline.sync.plan.roster import REJECTED_COLUMNS
from scim_pipeline.sync.plan.sharding import stable_shard

MANAGER = f"{ENTERPRISE_USER}:manager"
BAD_ROWS = Path(__file__).parents[2] / "sources" / "data" / "bad_rows"
USER_ATTRIBUTES = [
    "userName",
    "externalId",
    "name.givenName",
    "name.familyName",
    "displayName",
    WORK_EMAIL,
    "active",
    "title",
    f"{ENTERPRISE_USER}:department",
    f"{ENTERPRISE_USER}:employeeNumber",
    MANAGER,
]


def table(name: str, columns: dict[str, list[str]]) -> RawTable:
    length = len(next(iter(columns.values())))
    index = pd.Index(range(2, length + 2), dtype="int64", name="row")
    frame = pd.DataFrame({c: pd.array(v, dtype=TEXT) for c, v in columns.items()}, index=index)
    return RawTable(name, f"{name}.csv", frame)


def build(
    users: dict[str, list[str]],
    groups: dict[str, list[str]] | None = None,
    memberships: dict[str, list[str]] | None = None,
    mapping: Mapping | None = None,
) -> Roster:
    raw = RawRoster(
        users=table("users", users),
        groups=None if groups is None else table("groups", groups),
        memberships=None if memberships is None else table("memberships", memberships),
    )
    return build_roster(raw, mapping, shards=4)


def reasons(roster: Roster, table_name: str = "users") -> dict[int, str]:
    rejected = roster.rejected[roster.rejected["table"] == table_name]
    return dict(zip(rejected["row"], rejected["reason"], strict=True))


def test_the_users_frame_has_the_columns_and_types_of_the_contract() -> None:
    roster = build({"user_name": ["Ann.Lee", "bob"], "active": ["", "no"]})

    assert roster.users.columns.tolist() == ["key", "key_norm", "shard", "row", *USER_ATTRIBUTES]
    for column in ["key", "key_norm", *USER_ATTRIBUTES]:
        expected = "bool" if column == "active" else "string"
        assert roster.users[column].dtype == expected, column
    assert roster.users["shard"].dtype == np.int64
    assert roster.users["row"].tolist() == [2, 3]
    assert roster.users["key"].tolist() == ["Ann.Lee", "bob"]
    assert roster.users["key_norm"].tolist() == ["ann.lee", "bob"]
    assert roster.users["shard"].tolist() == stable_shard(roster.users["key_norm"], 4).tolist()
    assert roster.users["active"].tolist() == [True, False]


def test_the_rejected_and_warnings_frames_have_the_contract_columns() -> None:
    roster = build({"user_name": [""], "manager": [""]})

    assert tuple(roster.rejected.columns) == REJECTED_COLUMNS
    assert tuple(roster.warnings.columns) == REJECTED_COLUMNS
    assert roster.rejected["row"].dtype == np.int64


def test_groups_and_memberships_frames_follow_the_contract() -> None:
    roster = build(
        {"user_name": ["Ann"]},
        {"group_name": ["Admins"], "external_id": ["G1"]},
        {"group_name": ["ADMINS"], "user_name": ["ann"]},
    )

    assert roster.groups.columns.tolist() == ["key", "key_norm", "row", "displayName", "externalId"]
    assert roster.groups.iloc[0].tolist() == ["Admins", "admins", 2, "Admins", "G1"]
    assert roster.memberships.columns.tolist() == ["group_key_norm", "user_key_norm", "row"]
    assert roster.memberships.iloc[0].tolist() == ["admins", "ann", 2]


def test_an_empty_user_name_rejects_the_row() -> None:
    roster = build({"user_name": ["", "bob"]})

    rejected = roster.rejected.iloc[0]
    assert (rejected["table"], rejected["row"], rejected["field"]) == ("users", 2, "user_name")
    assert rejected["reason"] == "user_name is empty"
    assert rejected["key"] is pd.NA
    assert roster.users["userName"].tolist() == ["bob"]


def test_a_user_name_with_surrounding_spaces_is_rejected_with_advice() -> None:
    roster = build({"user_name": [" ann", "  "]})

    assert reasons(roster) == {
        2: "user_name ' ann' has leading or trailing spaces (the trim transform removes them)",
        3: "user_name '  ' has leading or trailing spaces (the trim transform removes them)",
    }


def test_duplicate_user_names_reject_every_row_and_name_the_other_row() -> None:
    roster = build({"user_name": ["ann", "bob", "ANN"]})

    assert reasons(roster) == {
        2: "user_name 'ann' duplicates row 4 (case-insensitive)",
        4: "user_name 'ANN' duplicates row 2 (case-insensitive)",
    }
    assert roster.users["userName"].tolist() == ["bob"]


def test_three_duplicates_say_how_many_rows_share_the_name() -> None:
    roster = build({"user_name": ["a", "A", "a"]})

    assert reasons(roster) == {
        2: "user_name 'a' duplicates row 3 (case-insensitive; 3 rows share it)",
        3: "user_name 'A' duplicates row 2 (case-insensitive; 3 rows share it)",
        4: "user_name 'a' duplicates row 2 (case-insensitive; 3 rows share it)",
    }


def test_user_names_are_compared_by_unicode_casefolding() -> None:
    roster = build({"user_name": ["STRASSE", "straße"]})

    assert roster.users.empty
    assert len(roster.rejected) == 2


@pytest.mark.parametrize(
    ("value", "active"),
    [
        ("true", True),
        ("TRUE", True),
        (" Yes ", True),
        ("1", True),
        ("", True),
        ("false", False),
        ("No", False),
        ("0", False),
    ],
)
def test_active_accepts_true_false_yes_no_one_zero_in_any_case(value: str, active: bool) -> None:
    roster = build({"user_name": ["ann"], "active": [value]})

    assert roster.users["active"].tolist() == [active]


def test_an_unknown_active_value_rejects_the_row() -> None:
    roster = build({"user_name": ["ann"], "active": ["maybe"]})

    assert reasons(roster) == {2: "active 'maybe' is not one of true, false, yes, no, 1, 0"}


@pytest.mark.parametrize(
    "email", ["ann at example.com", "ann@@example.com", "a@b@c", "ann @example.com", "@", "ann\u3000x@example.com"]
)
def test_a_malformed_email_rejects_the_row(email: str) -> None:
    roster = build({"user_name": ["ann"], "email": [email]})

    assert reasons(roster)[2].startswith("email '")
    assert reasons(roster)[2].endswith("' is not an e-mail address (one @, no spaces)")


@pytest.mark.parametrize("email", ["ann@example.com", "o'brien+tag@example.co.uk", "名前@例え.jp"])
def test_a_plausible_email_passes(email: str) -> None:
    assert build({"user_name": ["ann"], "email": [email]}).users[WORK_EMAIL].tolist() == [email]


@pytest.mark.parametrize(
    ("value", "code"),
    [("a\x00b", "U+0000"), ("a\tb", "U+0009"), ("a\nb", "U+000A"), ("\x7f", "U+007F"), ("\x85", "U+0085")],
)
def test_a_control_character_in_any_value_rejects_the_row(value: str, code: str) -> None:
    roster = build({"user_name": ["ann"], "title": [value]})

    assert reasons(roster) == {2: f"title contains a control character ({code})"}


def test_an_over_long_value_rejects_the_row_and_the_limit_is_configurable() -> None:
    users = {"user_name": ["ann", "bob"], "title": ["x" * 1024, "x" * 1025]}

    assert reasons(build(users)) == {3: "title is 1025 characters long (the limit is 1024)"}
    assert len(build(users, mapping=Mapping(max_value_length=2000)).users) == 2


@pytest.mark.parametrize(
    "value", ['=HYPERLINK("http://evil.example","x")', "-Ann", "+31 20 123", "@ann", '" or userName pr "', "\\\\"]
)
def test_values_that_look_like_formulas_or_filters_pass_literally(value: str) -> None:
    roster = build({"user_name": [value], "given_name": [value]})

    assert roster.users["userName"].tolist() == [value]
    assert roster.users["name.givenName"].tolist() == [value]


def test_every_problem_of_a_row_is_reported() -> None:
    roster = build({"user_name": ["ann"], "active": ["maybe"], "email": ["nope"]})

    rejected = roster.rejected.iloc[0]
    assert rejected["field"] == "email; active"
    assert rejected["reason"] == (
        "email 'nope' is not an e-mail address (one @, no spaces); "
        "active 'maybe' is not one of true, false, yes, no, 1, 0"
    )


def test_long_values_are_shortened_and_control_characters_made_visible_in_reasons() -> None:
    roster = build({"user_name": ["ann"], "email": ["a\x00" + "b" * 100]})

    reason = reasons(roster)[2]
    assert "\x00" not in reason
    assert "a\ufffd" + "b" * 58 + "…'" in reason


def test_rows_the_source_could_not_read_are_rejected_with_the_source_reason() -> None:
    raw = table("users", {"user_name": ["ann"]})
    unreadable = pd.DataFrame({"row": pd.Series([3], dtype="int64"), "reason": pd.Series(["bad row"], dtype=TEXT)})
    roster = build_roster(RawRoster(RawTable("users", "users.csv", raw.frame, unreadable)), shards=2)

    assert reasons(roster) == {3: "bad row"}
    assert roster.stats["users_read"] == 2
    assert roster.stats["users_rejected"] == 1


def test_a_manager_is_resolved_to_the_managers_key() -> None:
    mapping = Mapping.model_validate({"users": {"match": "externalId"}})
    roster = build(
        {"user_name": ["boss", "ann"], "external_id": ["E1", "E2"], "manager": ["", "BOSS"]}, mapping=mapping
    )

    assert roster.users[MANAGER].tolist() == [pd.NA, "E1"]
    assert roster.warnings.empty


def test_an_unknown_manager_is_dropped_with_a_warning_and_the_user_proceeds() -> None:
    roster = build({"user_name": ["ann"], "manager": ["ghost"]})

    assert roster.users["userName"].tolist() == ["ann"]
    assert roster.users[MANAGER].isna().all()
    assert roster.rejected.empty
    warning = roster.warnings.iloc[0]
    assert (warning["table"], warning["row"], warning["key"], warning["field"]) == ("users", 2, "ann", "manager")
    assert warning["reason"] == "manager 'ghost' is not a user in the roster; manager left empty"
    assert roster.stats["users_manager_dropped"] == 1


def test_a_rejected_or_out_of_scope_manager_is_dropped_with_the_reason() -> None:
    mapping = Mapping.model_validate({"users": {"scope": [{"column": "dept", "operator": "equals", "value": "IT"}]}})
    roster = build(
        {
            "user_name": ["bad", "away", "ann", "bob"],
            "active": ["maybe", "", "", ""],
            "dept": ["IT", "Sales", "IT", "IT"],
            "manager": ["", "", "bad", "away"],
        },
        mapping=mapping,
    )

    assert roster.warnings["reason"].tolist() == [
        "manager 'bad' was rejected (users row 2); manager left empty",
        "manager 'away' is out of scope; manager left empty",
    ]


def test_group_names_must_be_present_and_unique_case_insensitively() -> None:
    roster = build({"user_name": ["ann"]}, {"group_name": ["Admins", "", "admins", "Users"]})

    assert roster.groups["displayName"].tolist() == ["Users"]
    assert reasons(roster, "groups") == {
        2: "group_name 'Admins' duplicates row 4 (case-insensitive)",
        3: "group_name is empty",
        4: "group_name 'admins' duplicates row 2 (case-insensitive)",
    }


def test_memberships_naming_unknown_or_rejected_identities_are_rejected() -> None:
    roster = build(
        {"user_name": ["ann", "", "bob", "BOB"]},
        {"group_name": ["Admins", "admins", "Users"]},
        {
            "group_name": ["Users", "Users", "Nowhere", "Admins", ""],
            "user_name": ["ghost", "bob", "ann", "ann", "ann"],
        },
    )

    assert roster.memberships.empty
    assert reasons(roster, "memberships") == {
        2: "user_name 'ghost' is not a user in the roster",
        3: "user_name 'bob' was rejected (users row 4)",
        4: "group_name 'Nowhere' is not a group in the roster",
        5: "group_name 'Admins' was rejected (groups row 2)",
        6: "group_name is empty",
    }
    keys = roster.rejected.loc[roster.rejected["table"] == "memberships", "key"].tolist()
    assert keys == ["Users / ghost", "Users / bob", "Nowhere / ann", "Admins / ann", " / ann"]


def test_an_empty_membership_row_has_no_key() -> None:
    roster = build({"user_name": ["ann"]}, {"group_name": ["G"]}, {"group_name": [""], "user_name": [""]})

    assert roster.rejected["key"].isna().all()
    assert reasons(roster, "memberships") == {2: "group_name is empty; user_name is empty"}


def test_memberships_without_a_groups_table_are_rejected() -> None:
    roster = build({"user_name": ["ann"]}, memberships={"group_name": ["G"], "user_name": ["ann"]})

    assert reasons(roster, "memberships") == {
        2: "group_name 'G' is not a group in the roster (there is no groups table)"
    }


def test_memberships_of_out_of_scope_identities_are_left_out_and_counted() -> None:
    mapping = Mapping.model_validate(
        {
            "users": {"scope": [{"column": "dept", "operator": "equals", "value": "IT"}]},
            "groups": {"scope": [{"column": "group_name", "operator": "matches", "value": "^PAM-"}]},
        }
    )
    roster = build(
        {"user_name": ["ann", "bob"], "dept": ["IT", "Sales"]},
        {"group_name": ["PAM-Admins", "Lunch"]},
        {"group_name": ["PAM-Admins", "PAM-Admins", "Lunch"], "user_name": ["ann", "bob", "ann"]},
        mapping=mapping,
    )

    assert roster.memberships["user_key_norm"].tolist() == ["ann"]
    assert roster.rejected.empty
    assert roster.stats["users_out_of_scope"] == 1
    assert roster.stats["groups_out_of_scope"] == 1
    assert roster.stats["memberships_out_of_scope"] == 2


def test_duplicate_memberships_are_dropped_silently_and_counted() -> None:
    roster = build(
        {"user_name": ["Ann"]},
        {"group_name": ["Admins"]},
        {"group_name": ["Admins", "ADMINS", "admins"], "user_name": ["Ann", "ann", "ANN"]},
    )

    assert roster.memberships["row"].tolist() == [2]
    assert roster.rejected.empty
    assert roster.stats["memberships_duplicates"] == 2


def test_memberships_carry_the_users_key_when_users_match_on_external_id() -> None:
    mapping = Mapping.model_validate({"users": {"match": "externalId"}})
    roster = build(
        {"user_name": ["ann"], "external_id": ["E-1"]},
        {"group_name": ["Admins"]},
        {"group_name": ["Admins"], "user_name": ["ANN"]},
        mapping=mapping,
    )

    assert roster.memberships["user_key_norm"].tolist() == ["E-1"]


def test_rejected_keys_are_listed_for_the_change_engine_to_hold() -> None:
    roster = build({"user_name": ["Ann", "ann", "bob"]})

    assert roster.rejected_keys().tolist() == ["ann"]


def test_every_user_row_is_counted_once() -> None:
    mapping = Mapping.model_validate({"users": {"scope": [{"column": "dept", "operator": "is_not_empty"}]}})
    roster = build({"user_name": ["a", "b", "", "d"], "dept": ["IT", "", "IT", "IT"]}, mapping=mapping)

    stats = roster.stats
    assert stats["users_read"] == 4
    assert (stats["users_accepted"], stats["users_rejected"], stats["users_out_of_scope"]) == (2, 1, 1)


@pytest.mark.parametrize(("name", "content"), [("users.csv", ""), ("users.jsonl", ""), ("users.jsonl", "{bad\n")])
def test_a_users_file_without_any_record_is_an_empty_roster(tmp_path: Path, name: str, content: str) -> None:
    # Not an error: the empty-roster guard downstream stops the cycle and says how to allow it.
    (tmp_path / name).write_text(content, encoding="utf-8")

    roster = build_roster(FolderRosterSource(tmp_path).read(), shards=2)

    assert roster.users.empty
    assert roster.users.columns.tolist() == ["key", "key_norm", "shard", "row", *USER_ATTRIBUTES]
    assert len(roster.rejected) == content.count("\n")


def test_fewer_than_one_shard_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_roster(RawRoster(table("users", {"user_name": ["a"]})), shards=0)


def test_the_bad_rows_fixture_sets_aside_exactly_the_bad_rows() -> None:
    roster = build_roster(FolderRosterSource(BAD_ROWS).read(), shards=4)

    assert roster.users["userName"].tolist() == ["dev.null", '=HYPERLINK("http://x")', "eve.ng"]
    assert reasons(roster) == {
        2: "user_name 'ann.lee' duplicates row 3 (case-insensitive)",
        3: "user_name 'Ann.Lee' duplicates row 2 (case-insensitive)",
        4: "user_name is empty",
        5: "email 'bob at example.com' is not an e-mail address (one @, no spaces)",
        6: "active 'maybe' is not one of true, false, yes, no, 1, 0",
    }
    assert roster.warnings["reason"].tolist() == [
        "manager 'ghost.user' is not a user in the roster; manager left empty",
        "manager 'bob.ray' was rejected (users row 5); manager left empty",
    ]
    assert reasons(roster, "groups") == {
        2: "group_name 'Engineering' duplicates row 3 (case-insensitive)",
        3: "group_name 'engineering' duplicates row 2 (case-insensitive)",
        5: "group_name is empty",
    }
    assert reasons(roster, "memberships") == {
        4: "user_name 'ann.lee' was rejected (users row 2)",
        5: "group_name 'Engineering' was rejected (groups row 2)",
        6: "group_name 'Nowhere' is not a group in the roster",
        7: "user_name 'ghost.user' is not a user in the roster",
    }
    assert roster.memberships["row"].tolist() == [2, 8]
    assert roster.stats["memberships_duplicates"] == 1


def test_the_sample_roster_is_clean() -> None:
    roster = build_roster(FolderRosterSource(SAMPLE_ROSTER).read(), shards=16)

    assert roster.rejected.empty
    assert roster.warnings.empty
    assert len(roster.users) == 60
    assert (~roster.users["active"]).sum() == 2
    assert roster.users[MANAGER].notna().sum() == 59
    assert roster.users[f"{ENTERPRISE_USER}:department"].nunique() >= 5
    assert len(roster.groups) == 8
    assert len(roster.memberships) >= 100


def test_the_example_mapping_file_is_valid() -> None:
    assert load_mapping(Path(__file__).parents[3] / "examples" / "mapping.yaml").users.match == "userName"


def test_values_in_arrow_buffers_with_shifted_offsets_are_folded_correctly() -> None:
    # Parquet and CSV readers hand out chunks whose offsets start deep inside a shared buffer; pyarrow 26's
    # ascii_lower garbles those, which once made distinct users look like duplicates.
    data = b"XXXXAnnBOBcid"
    offsets = pa.py_buffer(np.array([4, 7, 10, 13], dtype=np.int64).tobytes())
    shifted = pa.LargeStringArray.from_buffers(3, offsets, pa.py_buffer(data))
    users = RawTable("users", "users.parquet", pd.DataFrame({"user_name": pd.array(shifted, dtype=TEXT)}))

    roster = build_roster(RawRoster(users), shards=2)

    assert roster.users["key_norm"].tolist() == ["ann", "bob", "cid"]
    assert roster.rejected.empty


def test_parquet_row_groups_do_not_change_the_roster(tmp_path: Path) -> None:
    names = [f"User{i:03d}" for i in range(500)]
    pq.write_table(
        pa.table({"user_name": names, "title": ["T\x01" if i == 7 else "t" for i in range(500)]}),
        tmp_path / "users.parquet",
        row_group_size=64,
    )

    roster = build_roster(FolderRosterSource(tmp_path).read(), shards=2)

    assert roster.users["key_norm"].tolist() == [n.lower() for i, n in enumerate(names) if i != 7]
    assert reasons(roster) == {8: "title contains a control character (U+0001)"}
