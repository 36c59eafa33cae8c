"""The folder roster source: every value read as text, row numbers a person can find, clear file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scim_pipeline.sample_roster import SAMPLE_ROSTER
from scim_pipeline.sources import TEXT, FolderRosterSource, RawRoster, RosterError, RosterSource
from scim_pipeline.sources.folder import _read_csv_careful, _read_csv_fast, _read_jsonl_careful, _read_jsonl_fast

DATA = Path(__file__).parent / "data"
TRICKY = ["00123", "NA", "null", "None", "nan", "true", "1.5e3", "#N/A", "-", "=1+1"]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read(folder: Path) -> RawRoster:
    return FolderRosterSource(folder).read()


def csv_of(rows: list[list[str]]) -> str:
    return "".join(",".join(row) + "\n" for row in rows)


def test_folder_source_is_a_roster_source(tmp_path: Path) -> None:
    assert isinstance(FolderRosterSource(tmp_path), RosterSource)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_values_are_read_as_text_without_type_inference(tmp_path: Path, fmt: str) -> None:
    names = [f"u{i}" for i in range(len(TRICKY))]
    if fmt == "csv":
        write(
            tmp_path,
            "users.csv",
            csv_of([["user_name", "employee_number"], *map(list, zip(names, TRICKY, strict=True))]),
        )
    elif fmt == "jsonl":
        lines = [json.dumps({"user_name": n, "employee_number": v}) for n, v in zip(names, TRICKY, strict=True)]
        write(tmp_path, "users.jsonl", "\n".join(lines) + "\n")
    else:
        pq.write_table(pa.table({"user_name": names, "employee_number": TRICKY}), tmp_path / "users.parquet")

    users = read(tmp_path).users.frame

    assert users["employee_number"].tolist() == TRICKY
    assert all(dtype == TEXT for dtype in users.dtypes)


def test_a_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", b"\xef\xbb\xbfuser_name\nann\n")

    assert read(tmp_path).users.frame.columns.tolist() == ["user_name"]


def test_csv_rows_are_numbered_like_a_spreadsheet(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", 'user_name,title\nann,a\n\nbob,"two\nlines"\ncid,c\n')

    users = read(tmp_path).users.frame

    assert users.index.tolist() == [2, 4, 5]  # header = row 1; the blank line is row 3
    assert users.loc[4, "title"] == "two\nlines"


def test_a_quoted_line_break_keeps_the_record_numbering(tmp_path: Path) -> None:
    rows = "".join(f"u{i},t{i}\n" for i in range(50))
    write(tmp_path, "users.csv", f'user_name,title\n{rows}bob,"two\nlines"\ncid,c\n')

    users = read(tmp_path).users.frame

    assert users.loc[52, "title"] == "two\nlines"
    assert users.loc[53, "user_name"] == "cid"
    assert len(users) == 52


def test_jsonl_rows_are_line_numbers_and_parquet_rows_count_from_one(tmp_path: Path) -> None:
    write(tmp_path, "users.jsonl", '{"user_name": "ann"}\n\n{"user_name": "bob"}\n')
    pq.write_table(pa.table({"group_name": ["g1", "g2"]}), tmp_path / "groups.parquet")

    roster = read(tmp_path)

    assert roster.users.frame.index.tolist() == [1, 3]
    assert roster.groups is not None
    assert roster.groups.frame.index.tolist() == [1, 2]


def test_a_file_that_is_not_utf8_is_refused_naming_the_byte_offset(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", (DATA / "latin1_users.csv").read_bytes())

    with pytest.raises(RosterError) as caught:
        read(tmp_path)

    message = str(caught.value)
    assert str(tmp_path / "users.csv") in message
    assert "byte offset 17" in message
    assert "line 2" in message
    assert "UTF-8" in message


def test_a_utf16_file_is_refused_with_advice(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name\nann\n".encode("utf-16"))

    with pytest.raises(RosterError, match="UTF-16; save it as UTF-8"):
        read(tmp_path)


def test_two_files_for_one_table_are_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name\nann\n")
    write(tmp_path, "users.jsonl", '{"user_name": "ann"}\n')

    with pytest.raises(RosterError) as caught:
        read(tmp_path)

    assert "users.csv" in str(caught.value)
    assert "users.jsonl" in str(caught.value)


def test_a_folder_without_users_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "groups.csv", "group_name\ng\n")

    with pytest.raises(RosterError, match=r"no users table .*users\.csv, users\.parquet or users\.jsonl|users\.csv"):
        read(tmp_path)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="does not exist"):
        read(tmp_path / "nowhere")


def test_groups_and_memberships_are_optional_and_an_empty_file_means_none(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name\nann\n")
    write(tmp_path, "groups.csv", "")

    roster = read(tmp_path)

    assert roster.groups is None
    assert roster.memberships is None


def test_file_names_match_case_insensitively(tmp_path: Path) -> None:
    write(tmp_path, "Users.CSV", "user_name\nann\n")

    assert read(tmp_path).users.frame["user_name"].tolist() == ["ann"]


def test_an_empty_users_file_reads_as_a_table_without_columns(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "")

    users = read(tmp_path).users

    assert users.frame.shape == (0, 0)


def test_a_header_only_file_has_no_rows(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name,email\n")

    users = read(tmp_path).users.frame

    assert users.columns.tolist() == ["user_name", "email"]
    assert len(users) == 0


def test_a_row_with_the_wrong_number_of_values_is_set_aside_and_the_rest_proceed(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name,email\nann,a@x.io\nbob,b@x.io,extra\ncid,c@x.io\ndan")

    users = read(tmp_path).users

    assert users.frame["user_name"].tolist() == ["ann", "cid"]
    assert users.unreadable["row"].tolist() == [3, 5]
    assert "header has 2 columns" in users.unreadable["reason"].iloc[1]
    assert users.rows_read == 4


@pytest.mark.parametrize("ending", ["", "\n"])
def test_a_quote_never_closed_is_an_error_naming_the_line(tmp_path: Path, ending: str) -> None:
    # Read leniently, the rest of the file would become one value and its users would vanish from the roster.
    write(tmp_path, "users.csv", f'user_name,title\nann,a\nbob,"unfinished\ncid,c{ending}')

    with pytest.raises(RosterError, match=r"users\.csv: cannot parse the CSV record starting on line 3"):
        read(tmp_path)


def test_a_column_name_used_twice_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name,email, email\nann,a,b\n")

    with pytest.raises(RosterError, match=r"column 'email' twice \(columns 2 and 3\)"):
        read(tmp_path)


def test_extra_columns_are_kept_and_names_are_stripped(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", " user_name ,cost_center,\nann,CC-1,\n")

    users = read(tmp_path).users.frame

    assert users.columns.tolist() == ["user_name", "cost_center", "column 3"]
    assert users.loc[2, "cost_center"] == "CC-1"


def test_values_longer_than_the_csv_module_limit_are_read(tmp_path: Path) -> None:
    long_value = "x" * 200_000
    # The blank line sends the file through the careful (csv module) reader.
    write(tmp_path, "users.csv", f"user_name,title\nann,{long_value}\n\nbob,b\n")

    users = read(tmp_path).users.frame

    assert users.loc[2, "title"] == long_value


def test_the_fast_and_careful_csv_readers_agree(tmp_path: Path) -> None:
    text = 'user_name,title\nann,"a, b"\nbob,"say ""hi"""\ncid,\n"d\nd",x\nNA,null\n'
    path = write(tmp_path, "users.csv", text)

    fast = _read_csv_fast(text.encode(), ["user_name", "title"], records=6)
    careful = _read_csv_careful(text, ["user_name", "title"], path, "users").frame

    assert fast is not None
    pd.testing.assert_frame_equal(fast, careful)


def test_the_fast_and_careful_jsonl_readers_agree(tmp_path: Path) -> None:
    lines = [
        '{"user_name": "ann", "active": true, "employee_number": 7, "title": null}',
        '{"user_name": "NA", "active": false, "nick": "\\u00e9\\u2028\\u0000"}',
        '{"user_name": "00123", "employee_number": -12}',
    ]
    text = "\n".join(lines) + "\n"
    path = write(tmp_path, "users.jsonl", text)

    fast = _read_jsonl_fast(text.encode())
    careful = _read_jsonl_careful(text, path, "users")

    assert fast is not None
    assert careful.unreadable.empty
    pd.testing.assert_frame_equal(fast, careful.frame, check_like=True)


@pytest.mark.parametrize(
    "line", ['{"x": 1.0}', '{"x": [1]}', '{" x": "a"}', '{"x": "a", "x": "b"}', '{"x": "\\ud800"}', "{bad"]
)
def test_jsonl_the_fast_reader_would_change_is_left_to_the_careful_one(line: str) -> None:
    assert _read_jsonl_fast(f'{{"user_name": "ann"}}\n{line}\n'.encode()) is None


def test_jsonl_lines_that_cannot_be_read_are_set_aside(tmp_path: Path) -> None:
    lines = [
        '{"user_name": "ann", "active": true, "employee_number": 7, "title": null}',
        '{"user_name": "bob"',
        '["not", "an", "object"]',
        '{"user_name": "cid", "groups": ["a"]}',
        '{"user_name": "dan", "user_name": "eve"}',
        '{"user_name": "\\ud800"}',
        '{"user_name": "fay"}',
    ]
    write(tmp_path, "users.jsonl", "\n".join(lines))

    users = read(tmp_path).users

    assert users.frame["user_name"].tolist() == ["ann", "fay"]
    assert users.frame.loc[1, "active"] == "true"
    assert users.frame.loc[1, "employee_number"] == "7"
    assert users.frame.loc[1, "title"] is pd.NA
    reasons = dict(zip(users.unreadable["row"], users.unreadable["reason"], strict=True))
    assert "not valid JSON" in reasons[2]
    assert "not a JSON object" in reasons[3]
    assert "JSON list where text is expected" in reasons[4]
    assert "'user_name' twice" in reasons[5]
    assert "lone surrogate" in reasons[6]


def test_parquet_columns_are_cast_to_text_and_nested_columns_are_set_aside(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_name": ["ann", "bob"],
            "employee_number": pa.array([123, None], pa.int64()),
            "active": [True, False],
            "roles": [["a"], []],
        }
    )
    pq.write_table(table, tmp_path / "users.parquet")

    users = read(tmp_path).users

    assert users.frame["employee_number"].tolist() == ["123", pd.NA]
    assert users.frame["active"].tolist() == ["true", "false"]
    assert "roles" in users.unsupported_columns


def test_a_truncated_parquet_file_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_name": ["ann"] * 100}), tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    write(tmp_path, "users.parquet", data[: len(data) // 2])

    with pytest.raises(RosterError, match=r"users\.parquet is not a readable Parquet file"):
        read(tmp_path)


def test_the_bundled_sample_roster_reads_cleanly() -> None:
    roster = read(SAMPLE_ROSTER)

    assert len(roster.users.frame) == 60
    assert roster.groups is not None
    assert len(roster.groups.frame) == 8
    assert roster.memberships is not None
    assert len(roster.memberships.frame) > 100
    assert roster.users.unreadable.empty


# --- hardening: only regular files inside the folder, no silent row splits -------------------------------------


def test_a_link_to_a_file_outside_the_folder_is_refused_without_quoting_it(tmp_path: Path) -> None:
    folder = tmp_path / "roster"
    folder.mkdir()
    outside = write(tmp_path, "shadow.csv", "root:x:0:0:secret-line-of-another-file\n")
    (folder / "users.csv").symlink_to(outside)

    with pytest.raises(RosterError, match=r"users\.csv is a link to a file outside the roster folder") as caught:
        read(folder)

    assert "secret-line-of-another-file" not in str(caught.value)


def test_a_link_to_a_file_inside_the_folder_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "roster"
    (folder / "exports").mkdir(parents=True)
    write(folder / "exports", "today.csv", "user_name\nann\n")
    (folder / "users.csv").symlink_to(folder / "exports" / "today.csv")

    assert read(folder).users.frame["user_name"].tolist() == ["ann"]


def test_a_folder_named_like_a_table_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name\nann\n")
    (tmp_path / "groups.csv").mkdir()

    with pytest.raises(RosterError, match=r"groups\.csv is not a regular file"):
        read(tmp_path)


def test_a_bare_carriage_return_in_an_unquoted_cell_names_the_row(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", "user_name,title\nann,a\nbob,Head of\rSales\ncid,c\n")

    with pytest.raises(RosterError, match=r"users\.csv: row 3 holds a bare carriage return"):
        read(tmp_path)


def test_a_carriage_return_inside_quotes_is_part_of_the_value(tmp_path: Path) -> None:
    write(tmp_path, "users.csv", 'user_name,title\r\nann,a\r\nbob,"Head of\rSales"\r\ncid,c\r\n')

    users = read(tmp_path).users.frame

    assert users.loc[3, "title"] == "Head of\rSales"
    assert users.index.tolist() == [2, 3, 4]
