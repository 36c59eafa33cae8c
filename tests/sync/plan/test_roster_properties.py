"""Hostile rosters and mapping files (hypothesis): never a crash, every row accounted for, accepted values literal.

Rosters are written to CSV, JSONL and Parquet and read back through the folder source, so the property covers the
whole way from the file to the normalized roster.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scim_pipeline.sources import FolderRosterSource, RosterError
from scim_pipeline.sync.plan.mapping import ENTERPRISE_USER, WORK_EMAIL, MappingError, build_roster, load_mapping

COLUMNS = ("user_name", "given_name", "email", "active", "manager")
ATTRIBUTE_OF = {
    "user_name": "userName",
    "given_name": "name.givenName",
    "email": WORK_EMAIL,
    "active": "active",
    "manager": f"{ENTERPRISE_USER}:manager",
}
HOSTILE = [
    '" or userName pr "',
    '=HYPERLINK("http://evil.example","click")',
    "\\",
    '\\"',
    "'; DROP TABLE users;--",
    "\x00",
    "a\x00b",
    "\r\n",
    "\r",
    "NA",
    "null",
    "None",
    "nan",
    "true",
    "00123",
    " ",
    "ann",
    "ANN",
    "Ann",
    "ß",
    "SS",
    "ss",
    "\u202e",
    "\ufeff",
    "\u2028",
    "x" * 1025,
    "",
    "@",
    "a@b",
    "a\u3000b@c",
    "a@b\u00a0c",
    "-1",
    "+1",
    "{user_name}",
]
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
ACTIVE = {"true", "false", "yes", "no", "1", "0"}
T = TypeVar("T")

values = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20))
rows = st.lists(st.fixed_dictionaries(dict.fromkeys(COLUMNS, values)), max_size=25)


def write_roster(folder: Path, fmt: str, records: list[dict[str, str]]) -> list[int]:
    """Write the users table; return the row number each record gets."""
    if fmt == "csv":
        with (folder / "users.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerows(records)
        return list(range(2, len(records) + 2))
    if fmt == "jsonl":
        lines = [json.dumps(record, ensure_ascii=False) for record in records]
        (folder / "users.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return list(range(1, len(records) + 1))
    columns = {name: pa.array([r[name] for r in records], pa.string()) for name in COLUMNS}
    pq.write_table(pa.table(columns), folder / "users.parquet")
    return list(range(1, len(records) + 1))


def attempt(call: Callable[[], T], expected: type[Exception]) -> tuple[T | None, str | None]:
    """Run `call`; an `expected` error is returned as its message, any other exception fails the test."""
    try:
        return call(), None
    except expected as error:
        return None, str(error)


def acceptable(record: dict[str, str], duplicated: set[str]) -> bool:
    """The validation rules of docs/mapping.md, restated in plain Python."""
    name = record["user_name"]
    if not name or name != name.strip() or name.casefold() in duplicated:
        return False
    if any(CONTROL.search(v) or len(v) > 1024 for v in record.values()):
        return False
    if record["email"] and not EMAIL.match(record["email"]):
        return False
    return not record["active"] or record["active"].strip().lower() in ACTIVE


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=rows)
def test_every_row_is_accepted_literally_or_rejected_with_a_reason(fmt: str, records: list[dict[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        row_numbers = write_roster(Path(folder), fmt, records)
        roster = build_roster(FolderRosterSource(folder).read(), shards=8)

    users = roster.users
    rejected = roster.rejected[roster.rejected["table"] == "users"]
    assert sorted([*users["row"], *rejected["row"]]) == row_numbers  # each row exactly once
    assert rejected["reason"].str.len().gt(0).all()

    names = [r["user_name"].casefold() for r in records if r["user_name"]]
    duplicated = {n for n in names if names.count(n) > 1}
    expected = [row for row, record in zip(row_numbers, records, strict=True) if acceptable(record, duplicated)]
    assert users["row"].tolist() == expected

    by_row = dict(zip(row_numbers, records, strict=True))
    for _, user in users.iterrows():
        record = by_row[user["row"]]
        assert user["key"] == record["user_name"]
        assert user["key_norm"] == record["user_name"].casefold()
        for column in ("user_name", "given_name", "email"):
            value = user[ATTRIBUTE_OF[column]]
            assert (value is pd.NA and record[column] == "") or value == record[column]


@settings(max_examples=60, deadline=None)
@given(
    header=st.lists(st.sampled_from([*COLUMNS, "", " user_name", "x", "user_name;email"]), max_size=6),
    body=st.binary(max_size=200),
)
def test_a_broken_csv_raises_only_roster_errors(header: list[str], body: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "users.csv").write_bytes(",".join(header).encode() + b"\n" + body)
        roster, error = attempt(lambda: build_roster(FolderRosterSource(folder).read(), shards=2), RosterError)
    if roster is None:
        assert error
    else:
        assert roster.stats["users_read"] == roster.stats["users_accepted"] + roster.stats["users_rejected"]


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300))
def test_broken_jsonl_and_parquet_raise_only_roster_errors(body: bytes) -> None:
    for name in ("users.jsonl", "users.parquet"):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / name).write_bytes(body)
            roster, error = attempt(lambda: build_roster(FolderRosterSource(folder).read(), shards=2), RosterError)
            assert roster is not None or error


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.sampled_from(HOSTILE))
yaml_keys = st.one_of(
    st.sampled_from(
        [
            "users",
            "groups",
            "memberships",
            "columns",
            "attributes",
            "scope",
            "match",
            "max_value_length",
            "column",
            "join",
            "template",
            "value",
            "transform",
            "default",
            "operator",
            "attribute",
            "userName",
            "title",
        ]
    ),
    st.text(max_size=8),
)
yaml_documents = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(yaml_keys, children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(document=yaml_documents)
def test_any_mapping_document_loads_or_raises_a_mapping_error(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mapping.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
        mapping, error = attempt(lambda: load_mapping(path), MappingError)
    if mapping is None:
        assert error is not None
        assert error.startswith("mapping file ")
        return
    raw = FolderRosterSource(Path(__file__).parents[3] / "examples" / "hr_export").read()
    roster, error = attempt(lambda: build_roster(raw, mapping, shards=2), RosterError)
    assert roster is not None or error  # a valid mapping may name columns this roster lacks


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_any_mapping_text_loads_or_raises_a_mapping_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mapping.yaml"
        path.write_text(text, encoding="utf-8")
        mapping, error = attempt(lambda: load_mapping(path), MappingError)
    assert mapping is not None or (error is not None and error.startswith("mapping file "))
