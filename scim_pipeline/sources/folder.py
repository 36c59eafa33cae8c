"""A roster folder: `users`, and optionally `groups` and `memberships`, each as `.csv`, `.parquet` or `.jsonl`.

Reading rules (the same for every format):

- Every value is read as text: no type inference, so `00123` stays `00123` and a user called `NA`, `null`, `None`,
  `nan` or `true` keeps that name. Empty cells are "no value".
- Text files must be UTF-8 (a UTF-8 byte-order mark is accepted and dropped). A file that is not UTF-8 is refused as a
  whole, naming the byte offset and line of the first bad byte: rejecting only the rows with accented names would
  deprovision exactly those people, silently.
- `row` is the row number a person sees when opening the file: CSV counts records as a spreadsheet does (the header is
  row 1, the first data record row 2; blank lines count), JSONL counts lines, Parquet counts records from 1.
- Rows that cannot be read (wrong number of CSV fields, a JSONL line that is not a JSON object, a nested value) are
  set aside with a reason; the rest of the file proceeds. A file that cannot be parsed at all (a quote never closed,
  a truncated Parquet file) is an error naming the file.
- Column names are stripped of surrounding spaces; a column name used twice is an error. Extra columns are kept and
  ignored unless the mapping uses them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from scim_pipeline.sources._incremental import SourceReport
from scim_pipeline.sources._raw import (
    OPTIONAL_TABLES,
    TABLES,
    TEXT,
    RawRoster,
    RawTable,
    RosterError,
    empty_unreadable,
)
from scim_pipeline.sources._signal import ChangeSignal, digest

__all__ = ["FORMATS", "FolderRosterSource", "read_table_file"]

FORMATS: Final = (".csv", ".parquet", ".jsonl")

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_OTHER_BOMS: Final = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
_BARE_CR: Final = re.compile(rb"\r(?!\n)")
_LONE_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class FolderRosterSource:
    """Reads a roster from a folder of files (see the module docstring for the rules)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.last_report: SourceReport | None = None

    def __repr__(self) -> str:
        return f"FolderRosterSource({str(self.folder)!r})"

    def read_with_report(self) -> tuple[RawRoster, SourceReport]:
        """`read()` and what it read (files count as one request each)."""
        started = time.perf_counter()
        roster = self.read()
        tables = {"users": roster.users, "groups": roster.groups, "memberships": roster.memberships}
        rows = {name: raw.rows_read if raw is not None else 0 for name, raw in tables.items()}
        files = sum(raw is not None for raw in tables.values())
        report = SourceReport(
            source="file",
            server=str(self.folder),
            mode="full",
            reason="a roster folder is read whole",
            rows=rows,
            entries_fetched=sum(rows.values()),
            requests=files,
            pages=files,
            watermark_before=None,
            watermark_after=None,
            wall_time_s=time.perf_counter() - started,
        )
        self.last_report = report
        return roster, report

    def read(self) -> RawRoster:
        """Read `users` (required), `groups` and `memberships` (optional). Raises `RosterError`."""
        if not self.folder.is_dir():
            raise RosterError(f"roster folder {self.folder} does not exist or is not a folder")
        tables: dict[str, RawTable | None] = {}
        for table in TABLES:
            path = self._find(table)
            if path is None:
                if table not in OPTIONAL_TABLES:
                    expected = ", ".join(f"{table}{ext}" for ext in FORMATS)
                    raise RosterError(f"roster folder {self.folder} has no {table} table (expected one of {expected})")
                tables[table] = None
                continue
            raw = read_table_file(path, table)
            if table in OPTIONAL_TABLES and raw.frame.shape[1] == 0 and raw.rows_read == 0:
                tables[table] = None  # an empty optional file means "no such table"
            else:
                tables[table] = raw
        users = tables["users"]
        assert users is not None
        return RawRoster(users=users, groups=tables["groups"], memberships=tables["memberships"])

    def change_signal(self) -> ChangeSignal:
        """The roster files' names, sizes, modification times and inodes (`stat` only: nothing is read), so an
        edit, a rewrite, an atomic replace, a file added or removed all move it. Raises `RosterError`."""
        if not self.folder.is_dir():
            raise RosterError(f"roster folder {self.folder} does not exist or is not a folder")
        stamps: list[tuple[str, int, int, int]] = []
        for table in TABLES:
            path = self._find(table)
            if path is None:
                continue
            try:
                found = path.stat()
            except OSError as exc:
                raise RosterError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
            stamps.append((path.name, found.st_size, found.st_mtime_ns, found.st_ino))
        if not any(name.lower().startswith("users.") for name, *_ in stamps):
            expected = ", ".join(f"users{ext}" for ext in FORMATS)
            raise RosterError(f"roster folder {self.folder} has no users table (expected one of {expected})")
        return ChangeSignal(digest(stamps), f"stat of {len(stamps)} roster files in {self.folder}")

    def _find(self, table: str) -> Path | None:
        wanted = {f"{table}{ext}" for ext in FORMATS}
        found = sorted(p for p in self.folder.iterdir() if p.name.lower() in wanted)
        if len(found) > 1:
            names = " and ".join(str(p) for p in found)
            raise RosterError(f"roster folder {self.folder} has two {table} tables: {names}; keep exactly one")
        return self._inside(found[0]) if found else None

    def _inside(self, path: Path) -> Path:
        """`path` resolved, if it is a regular file inside the roster folder; else a `RosterError` naming it.

        A link that leads out of the folder is refused before anything is read, so no line of the file it points
        to can reach an error message or a rejected-rows report.
        """
        try:
            resolved = path.resolve(strict=True)
            root = self.folder.resolve(strict=True)
            mode = resolved.stat().st_mode
        except OSError as exc:
            raise RosterError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        if not resolved.is_relative_to(root):
            raise RosterError(
                f"{path} is a link to a file outside the roster folder {self.folder}; only files inside it are read"
            )
        if not stat.S_ISREG(mode):
            raise RosterError(f"{path} is not a regular file (a folder, a pipe or a device?); only files are read")
        return resolved


def read_table_file(path: Path, table: str) -> RawTable:
    """Read one roster file by its extension. Raises `RosterError` when the file cannot be read at all."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path, table)
        if suffix == ".jsonl":
            return _read_jsonl(path, table)
        if suffix == ".parquet":
            return _read_parquet(path, table)
    except OSError as exc:
        raise RosterError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise RosterError(f"{path}: unsupported format {suffix!r} (use one of {', '.join(FORMATS)})")


# --- text decoding ---------------------------------------------------------------------------------------------


def _refuse_other_encodings(data: bytes, path: Path) -> None:
    for bom, encoding in _OTHER_BOMS.items():
        if data.startswith(bom):
            raise RosterError(f"{path} is encoded as {encoding}; save it as UTF-8")


def _decode_utf8(data: bytes, path: Path) -> str:
    _refuse_other_encodings(data, path)
    data = data.removeprefix(_UTF8_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RosterError(
            f"{path} is not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}) "
            "cannot be decoded; save the file as UTF-8"
        ) from None


def _clean_names(names: list[str], path: Path) -> list[str]:
    cleaned: list[str] = []
    positions: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        clean = name.strip() or f"column {position}"
        if clean in positions:
            raise RosterError(
                f"{path} has the column {clean!r} twice (columns {positions[clean]} and {position}); "
                "rename or remove one"
            )
        positions[clean] = position
        cleaned.append(clean)
    return cleaned


def _contiguous(values: Any) -> Any:
    """Arrow columns as one array with fresh buffers: chunks sliced out of a shared buffer (as Parquet and CSV readers
    produce) trip some pyarrow 26 string kernels, and one chunk is faster for everything after."""
    if isinstance(values, pa.ChunkedArray):
        chunks = values.cast(pa.large_string()).chunks
        return pa.concat_arrays(chunks) if chunks else pa.array([], pa.large_string())
    return values


def _text_frame(columns: dict[str, Any], rows: Any) -> pd.DataFrame:
    index = pd.Index(rows, dtype="int64", name="row")
    frame = {name: pd.array(_contiguous(values), dtype=TEXT) for name, values in columns.items()}
    return pd.DataFrame(frame, index=index)


def _unreadable(rows: list[int], reasons: list[str]) -> pd.DataFrame:
    if not rows:
        return empty_unreadable()
    return pd.DataFrame({"row": pd.Series(rows, dtype="int64"), "reason": pd.Series(reasons, dtype=TEXT)})


# --- CSV ---------------------------------------------------------------------------------------------------------


def _read_csv(path: Path, table: str) -> RawTable:
    data = path.read_bytes()
    _refuse_other_encodings(data, path)
    body = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
    if not body or body.isspace():
        return RawTable(table, str(path), _text_frame({}, []))
    # Trailing line breaks are not records; an interior blank line shifts pyarrow's record numbering (it skips it).
    end = len(body)
    while end and body[end - 1] in b"\r\n":
        end -= 1
    _refuse_bare_carriage_returns(body, end, path)
    line_end = body.find(b"\n", 0, end)
    first_line = body[: end if line_end < 0 else line_end].removesuffix(b"\r")
    simple = (
        line_end >= 0
        and b"\r" not in first_line
        and first_line.count(b'"') % 2 == 0  # the header has no quoted line break
        and body.count(b'"', 0, end) % 2 == 0  # no quote left open (a truncated file)
        and all(body.find(blank, 0, end) < 0 for blank in (b"\n\n", b"\n\r\n", b"\r\r"))
    )
    if simple:
        try:
            header = next(csv.reader([first_line.decode("utf-8")]))
        except UnicodeDecodeError:
            _decode_utf8(data, path)  # raises, naming the byte offset
            raise
        names = _clean_names(header, path)
        fast = _read_csv_fast(body, names, records=body.count(b"\n", 0, end))
        if fast is not None:
            return RawTable(table, str(path), fast)
    text = _decode_utf8(data, path)
    names = _clean_names(next(csv.reader(io.StringIO(text, newline=""))), path)
    return _read_csv_careful(text, names, path, table)


def _refuse_bare_carriage_returns(body: bytes, end: int, path: Path) -> None:
    """A CR without LF outside quotes would end a record in both CSV readers and split a row in two silently."""
    quotes, counted_to = 0, 0
    for match in _BARE_CR.finditer(body, 0, end):
        quotes += body.count(b'"', counted_to, match.start())
        counted_to = match.start()
        if quotes % 2:
            continue  # inside a quoted value: a line break that is part of the value
        row = 1 + sum(outside.count(b"\n") for outside in body[: match.start()].split(b'"')[::2])
        raise RosterError(
            f"{path}: row {row} holds a bare carriage return (CR without LF) outside quotes, which would split the "
            "row in two; quote the value, or save the file with LF or CRLF line endings"
        )


def _read_csv_fast(body: bytes, names: list[str], *, records: int) -> pd.DataFrame | None:
    """pyarrow's multithreaded parser; `None` when the file needs the careful reader (ragged rows, bad UTF-8).

    `records` is the number of data lines: when pyarrow finds another number of records, a quoted value holds a
    line break, and the file is parsed again with the (slower) setting that allows them.
    """
    placeholders = [f"c{i}" for i in range(len(names))]
    for newlines_in_values in (False, True):
        try:
            arrow = pa_csv.read_csv(
                pa.BufferReader(body),
                read_options=pa_csv.ReadOptions(column_names=placeholders, skip_rows=1),
                parse_options=pa_csv.ParseOptions(newlines_in_values=newlines_in_values),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(placeholders, pa.string()),
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if newlines_in_values or arrow.num_rows == records:
            rows = range(2, arrow.num_rows + 2)
            return _text_frame({name: arrow.column(i) for i, name in enumerate(names)}, rows)
    return None


@contextlib.contextmanager
def _large_csv_fields() -> Iterator[None]:
    # Over-long values are rejected per row by validation; the csv module must not refuse the whole file first.
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, 1 << 30))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _read_csv_careful(text: str, names: list[str], path: Path, table: str) -> RawTable:
    width = len(names)
    columns: list[list[str]] = [[] for _ in names]
    rows: list[int] = []
    bad_rows: list[int] = []
    bad_reasons: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    record = 0
    line_before = 0
    with _large_csv_fields():
        try:
            for values in reader:
                record += 1
                if record == 1:  # the header
                    line_before = reader.line_num
                    continue
                if not values:  # a blank line: counted, holds nothing
                    line_before = reader.line_num
                    continue
                if len(values) != width:
                    bad_rows.append(record)
                    bad_reasons.append(
                        f"row has {len(values)} values but the header has {width} columns "
                        "(a value with an unquoted comma, or a truncated line?)"
                    )
                else:
                    rows.append(record)
                    for column, value in zip(columns, values, strict=True):
                        column.append(value)
                line_before = reader.line_num
        except csv.Error as exc:
            raise RosterError(
                f"{path}: cannot parse the CSV record starting on line {line_before + 1}: {exc} "
                "(a quote that is never closed, or a truncated file?)"
            ) from None
    frame = _text_frame(dict(zip(names, columns, strict=True)), rows)
    return RawTable(table, str(path), frame, _unreadable(bad_rows, bad_reasons))


# --- JSON Lines --------------------------------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _json_value_as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    raise TypeError(type(value).__name__)


def _is_valid_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_jsonl(path: Path, table: str) -> RawTable:
    data = path.read_bytes()
    text = _decode_utf8(data, path)  # also what pyarrow's JSON reader does not check
    fast = _read_jsonl_fast(data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data)
    if fast is not None:
        return RawTable(table, str(path), fast)
    return _read_jsonl_careful(text, path, table)


_JSON_SCALARS: Final = (pa.types.is_string, pa.types.is_int64, pa.types.is_boolean, pa.types.is_null)


def _read_jsonl_fast(body: bytes) -> pd.DataFrame | None:
    """pyarrow's JSON reader, for files the careful reader would read the same way; else `None`.

    pyarrow refuses what the careful reader sets aside row by row (invalid JSON, a key given twice, a lone
    surrogate, a value changing type), so any error means "read carefully". Floats are left to the careful reader
    too (pyarrow writes 100.0 as "100"), as are nested values and column names with surrounding spaces.
    """
    end = len(body)
    while end and body[end - 1] in b"\r\n":
        end -= 1
    if not end:
        return None
    try:
        arrow = pa_json.read_json(pa.BufferReader(body))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if arrow.num_rows != body.count(b"\n", 0, end) + 1:
        return None  # blank lines were skipped: the row numbers would shift
    columns: dict[str, pa.ChunkedArray] = {}
    for name, column in zip(arrow.column_names, arrow.columns, strict=True):
        if not name or name != name.strip() or not any(is_kind(column.type) for is_kind in _JSON_SCALARS):
            return None
        if pa.types.is_boolean(column.type):
            columns[name] = pc.if_else(column, "true", "false")
        else:
            columns[name] = column.cast(pa.string())
    return _text_frame(columns, range(1, arrow.num_rows + 1))


def _read_jsonl_careful(text: str, path: Path, table: str) -> RawTable:
    records: list[dict[str, str | None]] = []
    rows: list[int] = []
    bad_rows: list[int] = []
    bad_reasons: list[str] = []
    names: dict[str, None] = {}  # insertion-ordered set of column names
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        reason = None
        try:
            parsed = json.loads(line, object_pairs_hook=_object_without_duplicates)
        except _DuplicateKeyError as exc:
            reason = f"the line names the key {str(exc)!r} twice"
        except json.JSONDecodeError as exc:
            reason = f"the line is not valid JSON ({exc.msg} at column {exc.colno}; a truncated line?)"
        else:
            if not isinstance(parsed, dict):
                reason = "the line is not a JSON object ({...})"
            else:
                record: dict[str, str | None] = {}
                for key, value in parsed.items():
                    try:
                        record[key.strip() or "column"] = _json_value_as_text(value)
                    except TypeError as exc:
                        reason = f"the value of {key!r} is a JSON {exc} where text is expected"
                        break
                if reason is None and _LONE_SURROGATE_ESCAPE.search(line):
                    for key, value in record.items():
                        if value is not None and not _is_valid_unicode(value):
                            reason = f"the value of {key!r} holds an invalid \\u escape (a lone surrogate)"
                            break
                if reason is None:
                    records.append(record)
                    rows.append(line_number)
                    names.update(dict.fromkeys(record))
        if reason is not None:
            bad_rows.append(line_number)
            bad_reasons.append(reason)
    columns = {name: [record.get(name) for record in records] for name in names}
    frame = _text_frame(columns, rows)
    return RawTable(table, str(path), frame, _unreadable(bad_rows, bad_reasons))


# --- Parquet -----------------------------------------------------------------------------------------------------


def _as_text_column(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_string(kind):
        return column
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "true", "false")
    if (
        pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
        or (
            pa.types.is_large_binary(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_decimal(kind)
            or pa.types.is_temporal(kind)
            or pa.types.is_null(kind)
        )
    ):
        try:
            return column.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    return None


def _read_parquet(path: Path, table: str) -> RawTable:
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, ValueError) as exc:
        raise RosterError(f"{path} is not a readable Parquet file (truncated or damaged?): {exc}") from None
    names = _clean_names(arrow.column_names, path)
    columns: dict[str, pa.ChunkedArray] = {}
    unsupported: dict[str, str] = {}
    for name, column in zip(names, arrow.columns, strict=True):
        text = _as_text_column(column)
        if text is None:
            unsupported[name] = f"its Parquet type {column.type} cannot be read as text"
        else:
            columns[name] = text
    frame = _text_frame(columns, range(1, arrow.num_rows + 1))
    return RawTable(table, str(path), frame, unsupported_columns=unsupported)
