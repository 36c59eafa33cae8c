"""The mapping file: loading with errors that name the key and line, and what each rule does to a roster."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources import TEXT, FolderRosterSource, RawRoster, RawTable, RosterError
from scim_pipeline.sync.plan.mapping import (
    ENTERPRISE_USER,
    WORK_EMAIL,
    Mapping,
    MappingError,
    Roster,
    build_roster,
    load_mapping,
)

EXAMPLES = Path(__file__).parents[3] / "examples"


def mapping_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def table(name: str, columns: dict[str, list[str]], *, source: str | None = None) -> RawTable:
    length = len(next(iter(columns.values()))) if columns else 0
    index = pd.Index(range(2, length + 2), dtype="int64", name="row")
    frame = pd.DataFrame({c: pd.array(v, dtype=TEXT) for c, v in columns.items()}, index=index)
    return RawTable(name, source or f"{name}.csv", frame)


def roster_of(users: dict[str, list[str]], mapping: Mapping | None = None, **tables: RawTable) -> Roster:
    raw = RawRoster(users=table("users", users), **tables)  # type: ignore[arg-type]
    return build_roster(raw, mapping, shards=4)


def mapping_of(tmp_path: Path, text: str) -> Mapping:
    return load_mapping(mapping_file(tmp_path, text))


# --- loading -----------------------------------------------------------------------------------------------------


def test_the_example_mapping_loads_and_maps_the_example_roster() -> None:
    mapping = load_mapping(EXAMPLES / "mapping.yaml")

    roster = build_roster(FolderRosterSource(EXAMPLES / "hr_export").read(), mapping, shards=4)

    assert roster.users["userName"].tolist() == ["aokafor", "vvargas", "hlindqvist"]
    assert roster.stats["users_out_of_scope"] == 2  # a contractor and a Finance user
    assert roster.rejected.empty
    assert mapping.source == str(EXAMPLES / "mapping.yaml")


def test_an_empty_mapping_file_is_the_default_mapping(tmp_path: Path) -> None:
    assert mapping_of(tmp_path, "# nothing here\n").model_dump() == Mapping().model_dump()


def test_a_mapping_error_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        mapping_of(tmp_path, "nonsense: 1\n")


def test_an_unknown_key_is_refused_naming_the_key_and_the_line(tmp_path: Path) -> None:
    path = mapping_file(tmp_path, "users:\n  match: userName\n  colums:\n    a: b\n")

    with pytest.raises(MappingError) as caught:
        load_mapping(path)

    assert f"mapping file {path}, line 3: users.colums" in str(caught.value)


def test_an_unknown_transform_is_refused_naming_the_key_and_the_line(tmp_path: Path) -> None:
    text = "users:\n  attributes:\n    title:\n      column: title\n      transform: [trim, titlecase]\n"

    with pytest.raises(MappingError, match=r"line 5: users\.attributes\.title\.transform\[1\]: Input should be"):
        mapping_of(tmp_path, text)


def test_invalid_yaml_is_refused_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"mapping\.yaml, line 4: .*flow sequence that starts on line 3"):
        mapping_of(tmp_path, "users:\n  match: userName\n  columns: [a\n")


def test_a_key_given_twice_is_refused_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"line 3: the key 'match' appears twice"):
        mapping_of(tmp_path, "users:\n  match: userName\n  match: externalId\n")


def test_a_top_level_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="expected keys such as users"):
        mapping_of(tmp_path, "- users\n")


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
    with pytest.raises(MappingError, match="too large once its YAML aliases are expanded"):
        mapping_of(tmp_path, "\n".join(lines) + "\n")


def test_a_mapping_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_bytes(b"users:\n  match: \xff\n")

    with pytest.raises(MappingError, match="is not UTF-8"):
        load_mapping(path)


def test_a_missing_mapping_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read mapping file"):
        load_mapping(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "template",
    ["{given_name.__class__}", "{0}", "{}", "{given_name!r}", "{given_name:>99}", "{given_name[0]}", "{unclosed"],
)
def test_templates_may_only_name_columns(tmp_path: Path, template: str) -> None:
    text = f"users:\n  attributes:\n    nickName:\n      template: '{template}'\n"

    with pytest.raises(MappingError, match=r"line 3: users\.attributes\.nickName: "):
        mapping_of(tmp_path, text)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{column: a, template: '{b}'}", "exactly one of column, join, template or value"),
        ("{transform: [lower]}", "exactly one of column, join, template or value"),
        ("{join: []}", "at least 1 item"),
    ],
)
def test_a_rule_needs_exactly_one_source(tmp_path: Path, rule: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        mapping_of(tmp_path, f"users:\n  attributes:\n    title: {rule}\n")


@pytest.mark.parametrize("path", ["userName", "active"])
def test_required_user_attributes_cannot_be_removed(tmp_path: Path, path: str) -> None:
    with pytest.raises(MappingError, match=f"attribute {path} cannot be removed"):
        mapping_of(tmp_path, f"users:\n  attributes:\n    {path}: null\n")


def test_matching_on_external_id_needs_an_external_id_attribute(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="match: externalId needs an externalId attribute"):
        mapping_of(tmp_path, "users:\n  match: externalId\n  attributes:\n    externalId: null\n")


def test_two_columns_renamed_onto_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="'a' and 'b' are both renamed to 'user_name'"):
        mapping_of(tmp_path, "users:\n  columns:\n    a: user_name\n    b: user_name\n")


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("{column: dept, operator: equals}", "equals needs one text value"),
        ("{column: dept, operator: equals, value: 1}", "Input should be a valid string"),
        ("{column: dept, operator: in, value: x}", "in needs a non-empty list"),
        ("{column: dept, operator: is_empty, value: x}", "is_empty takes no value"),
        ("{column: dept, operator: matches, value: '('}", "invalid regular expression"),
        ("{operator: is_empty}", "exactly one of column or attribute"),
        ("{column: dept, operator: like, value: x}", "Input should be 'equals'"),
    ],
)
def test_malformed_scope_clauses_are_refused(tmp_path: Path, clause: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        mapping_of(tmp_path, f"users:\n  scope:\n    - {clause}\n")


# --- applying it -------------------------------------------------------------------------------------------------


def test_the_default_mapping_puts_the_default_columns_on_their_scim_attributes() -> None:
    columns = {
        "user_name": ["ann"],
        "external_id": ["E1"],
        "given_name": ["Ann"],
        "family_name": ["Lee"],
        "display_name": ["Ann Lee"],
        "email": ["ann@example.com"],
        "active": ["no"],
        "department": ["R&D"],
        "title": ["Engineer"],
        "employee_number": ["00123"],
        "manager": ["ann"],
    }

    user = roster_of(columns).users.iloc[0]

    assert user["userName"] == "ann"
    assert user["externalId"] == "E1"
    assert user["name.givenName"] == "Ann"
    assert user["name.familyName"] == "Lee"
    assert user["displayName"] == "Ann Lee"
    assert user[WORK_EMAIL] == "ann@example.com"
    assert user["active"] is False or user["active"] == False  # noqa: E712 (numpy bool)
    assert user[f"{ENTERPRISE_USER}:department"] == "R&D"
    assert user["title"] == "Engineer"
    assert user[f"{ENTERPRISE_USER}:employeeNumber"] == "00123"
    assert user[f"{ENTERPRISE_USER}:manager"] == "ann"


def test_default_columns_missing_from_the_file_leave_their_attributes_empty() -> None:
    users = roster_of({"user_name": ["ann"]}).users

    assert users["title"].isna().all()
    assert users["active"].tolist() == [True]


def test_renamed_columns_feed_the_default_rules(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  columns:\n    login: user_name\n    mail: email\n")

    roster = roster_of({"login": ["ann"], "mail": ["ann@example.com"]}, mapping)

    assert roster.users["userName"].tolist() == ["ann"]
    assert roster.users[WORK_EMAIL].tolist() == ["ann@example.com"]
    assert roster.attribute_sources["userName"] == ["login"]


def test_renaming_a_column_the_file_lacks_is_an_error_listing_the_columns(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  columns:\n    login: user_name\n")

    with pytest.raises(RosterError, match=r"renames column 'login' of users\.csv.*columns found: 'user', 'mail'"):
        roster_of({"user": ["ann"], "mail": ["a@x.io"]}, mapping)


def test_a_missing_key_column_is_an_error_naming_the_file_and_listing_the_columns() -> None:
    with pytest.raises(RosterError) as caught:
        roster_of({"login": ["ann"], "mail": ["a@x.io"]})

    message = str(caught.value)
    assert "users.csv has no column user_name" in message
    assert "columns found: 'login', 'mail'" in message


def test_a_semicolon_separated_file_gets_a_hint() -> None:
    with pytest.raises(RosterError, match="another separator than the comma"):
        roster_of({"user_name;email": ["ann;a@x.io"]})


def test_a_column_named_by_a_written_rule_must_exist(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  attributes:\n    nickName: {template: '{given_nmae}'}\n")

    with pytest.raises(RosterError, match=r"no column given_nmae, which .*mapping\.yaml maps onto nickName"):
        roster_of({"user_name": ["ann"], "given_name": ["Ann"]}, mapping)


def test_transforms_apply_in_order_and_default_fills_empty_values(tmp_path: Path) -> None:
    mapping = mapping_of(
        tmp_path,
        "users:\n  attributes:\n"
        "    userName: {column: user_name, transform: [trim, lower]}\n"
        "    title: {column: title, transform: [trim, upper], default: STAFF}\n",
    )

    users = roster_of({"user_name": ["  Ann.Lee ", "BOB"], "title": ["  dev ", "   "]}, mapping).users

    assert users["userName"].tolist() == ["ann.lee", "bob"]
    assert users["title"].tolist() == ["DEV", "STAFF"]


def test_join_skips_empty_values(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  attributes:\n    displayName: {join: [given_name, family_name]}\n")

    users = roster_of(
        {"user_name": ["a", "b", "c"], "given_name": ["Ann", "", ""], "family_name": ["Lee", "Ng", ""]}, mapping
    ).users

    assert users["displayName"].tolist() == ["Ann Lee", "Ng", pd.NA]


def test_a_template_is_empty_when_a_column_it_names_is_empty(tmp_path: Path) -> None:
    mapping = mapping_of(
        tmp_path,
        "users:\n  attributes:\n"
        '    emails[type eq "work"].value:\n'
        "      template: '{given_name}.{family_name}@example.com'\n      transform: [lower]\n",
    )

    users = roster_of(
        {"user_name": ["a", "b"], "given_name": ["Ann", "Bob"], "family_name": ["Lee", ""]}, mapping
    ).users

    assert users[WORK_EMAIL].tolist() == ["ann.lee@example.com", pd.NA]


def test_a_template_inserts_values_literally(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  attributes:\n    nickName: {template: '{{{given_name}}}'}\n")

    users = roster_of({"user_name": ["a"], "given_name": ["{user_name.__class__}"]}, mapping).users

    assert users["nickName"].tolist() == ["{{user_name.__class__}}"]


def test_constant_values_and_removed_attributes(tmp_path: Path) -> None:
    mapping = mapping_of(
        tmp_path,
        f"users:\n  attributes:\n    {ENTERPRISE_USER}:organization: {{value: Example Corp}}\n    title: null\n",
    )

    users = roster_of({"user_name": ["a"], "title": ["Dev"]}, mapping).users

    assert users[f"{ENTERPRISE_USER}:organization"].tolist() == ["Example Corp"]
    assert "title" not in users.columns


@pytest.mark.parametrize(
    ("clause", "in_scope"),
    [
        ("{column: dept, operator: equals, value: Sales}", ["a"]),
        ("{column: dept, operator: equals, value: sales, ignore_case: true}", ["a", "b"]),
        ("{column: dept, operator: not_equals, value: Sales}", ["b", "c", "d"]),
        ("{column: dept, operator: in, value: [Sales, IT]}", ["a", "c"]),
        ("{column: dept, operator: not_in, value: [Sales, IT]}", ["b", "d"]),
        ("{column: dept, operator: is_empty}", ["d"]),
        ("{column: dept, operator: is_not_empty}", ["a", "b", "c"]),
        ("{column: dept, operator: matches, value: '^S'}", ["a"]),
        ("{column: dept, operator: matches, value: '^(?!Sales$)'}", ["b", "c"]),  # Python-only look-ahead
        ("{attribute: active, operator: equals, value: 'true'}", ["a", "b", "d"]),
    ],
)
def test_scope_operators(tmp_path: Path, clause: str, in_scope: list[str]) -> None:
    mapping = mapping_of(tmp_path, f"users:\n  scope:\n    - {clause}\n")
    users = {"user_name": ["a", "b", "c", "d"], "dept": ["Sales", "sales", "IT", ""], "active": ["", "", "no", ""]}

    roster = roster_of(users, mapping)

    assert roster.users["userName"].tolist() == in_scope
    assert roster.stats["users_out_of_scope"] == 4 - len(in_scope)
    assert roster.rejected.empty


def test_all_scope_clauses_must_hold(tmp_path: Path) -> None:
    mapping = mapping_of(
        tmp_path,
        "users:\n  scope:\n"
        "    - {column: dept, operator: equals, value: Sales}\n"
        "    - {column: country, operator: equals, value: NL}\n",
    )

    roster = roster_of({"user_name": ["a", "b"], "dept": ["Sales", "Sales"], "country": ["NL", "BE"]}, mapping)

    assert roster.users["userName"].tolist() == ["a"]


def test_a_scope_column_missing_from_the_file_is_an_error(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  scope:\n    - {column: dept, operator: is_empty}\n")

    with pytest.raises(RosterError, match="no column dept, which is used by scope clause 1"):
        roster_of({"user_name": ["a"]}, mapping)


def test_a_scope_attribute_the_mapping_does_not_produce_is_an_error(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  scope:\n    - {attribute: nickName, operator: is_empty}\n")

    with pytest.raises(RosterError, match="scope clause 1 names attribute nickName"):
        roster_of({"user_name": ["a"]}, mapping)


def test_matching_on_external_id_keys_users_by_their_exact_external_id(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "users:\n  match: externalId\n")

    roster = roster_of({"user_name": ["ann", "bob", "cid"], "external_id": ["E-a", "e-A", "E-a"]}, mapping)

    assert roster.user_match == "externalId"
    assert roster.users["key"].tolist() == ["e-A"]
    assert roster.users["key_norm"].tolist() == ["e-A"]  # compared exactly, not casefolded
    reasons = roster.rejected["reason"].tolist()
    assert reasons == [
        "external_id 'E-a' duplicates row 4 (exact match)",
        "external_id 'E-a' duplicates row 2 (exact match)",
    ]


def test_groups_can_match_on_external_id(tmp_path: Path) -> None:
    mapping = mapping_of(tmp_path, "groups:\n  match: externalId\n")
    groups = table("groups", {"group_name": ["Admins", "Users"], "external_id": ["G1", ""]})

    roster = roster_of({"user_name": ["a"]}, mapping, groups=groups)

    assert roster.groups["key"].tolist() == ["G1"]
    assert roster.rejected["reason"].tolist() == ["external_id is empty"]
