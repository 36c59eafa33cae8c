"""From raw roster tables to the normalized `Roster` the change sets are computed from.

`build_roster` maps columns onto SCIM attributes, validates every row, applies the scoping filter, resolves managers
and memberships, and sets aside each row it cannot use with a reason a person can act on. Everything is vectorized
(pandas/Arrow string operations), so a million users take seconds.

Rules (docs/mapping.md tells users the same):

- Keys: userName is compared case-insensitively (casefold) and must be unique that way; when users match on
  externalId, externalId is compared exactly (SCIM defines it as case-exact) and must be unique too. Group names are
  unique case-insensitively. A key that is empty, or has leading/trailing spaces, rejects its row.
- Duplicates reject every row holding the key, so neither wins silently; each reason names another row.
- Values: a control character (U+0000-U+001F, U+007F-U+009F, including NUL, tab and line breaks) or a value longer than
  `max_value_length` (default 1,024 characters) rejects the row. Everything else passes literally, including values
  that look like spreadsheet formulas (`=HYPERLINK(...)`, `-Ann`): the target is a SCIM service, not a spreadsheet, and
  refusing them would refuse real names.
- `active` accepts true/false/yes/no/1/0 in any case (surrounding spaces ignored); empty means true.
- An e-mail (any attribute under `emails`) needs exactly one `@` and no whitespace.
- A manager must name (by user_name) a user who is accepted and in scope; otherwise the manager is left empty and a
  warning is recorded — the user still proceeds.
- Out-of-scope identities are excluded and counted, not rejected. Memberships of out-of-scope users or groups are
  excluded the same way; memberships naming unknown or rejected users or groups are rejected. Duplicate memberships
  are dropped silently and counted.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scim_pipeline.sources import TEXT, RawRoster, RawTable, RosterError
from scim_pipeline.sync.plan._mapping_model import (
    ENTERPRISE_USER,
    AttributeRule,
    GroupMapping,
    Mapping,
    ScopeClause,
    UserMapping,
    template_parts,
)
from scim_pipeline.sync.plan.sharding import stable_shard

__all__ = ["REJECTED_COLUMNS", "Roster", "build_roster"]

REJECTED_COLUMNS: Final = ("table", "row", "key", "field", "reason")
MANAGER: Final = f"{ENTERPRISE_USER}:manager"

_CONTROL: Final = r"[\x00-\x1f\x7f-\x9f]"
# Python's `\s` spelled out: pandas runs `\s` through Python's re (RE2's is ASCII-only), a class runs in Arrow.
_NOT_SPACE_OR_AT: Final = "[^@\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_EMAIL: Final = f"^{_NOT_SPACE_OR_AT}+@{_NOT_SPACE_OR_AT}+$"
_TRUE: Final = ("true", "yes", "1")
_FALSE: Final = ("false", "no", "0")
_SHOWN: Final = 60


@dataclass(frozen=True)
class Roster:
    """The normalized roster (docs/internals.md fixes the columns).

    Attributes:
        users: one row per accepted, in-scope user: `key`, `key_norm`, `shard`, `row`, then one column per SCIM
            attribute path (`string` dtype; `active` is bool). Missing values are `<NA>`.
        groups: `key`, `key_norm`, `row`, then one column per SCIM attribute path.
        memberships: `group_key_norm`, `user_key_norm`, `row` (unique pairs).
        rejected: one row per input row set aside: `table`, `row`, `key`, `field`, `reason`.
        warnings: rows that proceed with a value dropped (e.g. an unknown manager); same columns as `rejected`.
        stats: counts (`users_read`, `users_accepted`, `users_rejected`, `users_out_of_scope`,
            `users_manager_dropped`, the same for groups, `memberships_duplicates`, …).
        user_match / group_match: the attribute the key holds (`userName`/`externalId`, `displayName`/`externalId`).
        lineage: per table, SCIM attribute path → the source columns it is computed from.
    """

    users: pd.DataFrame
    groups: pd.DataFrame
    memberships: pd.DataFrame
    rejected: pd.DataFrame
    warnings: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)
    user_match: str = "userName"
    group_match: str = "displayName"
    lineage: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def attribute_sources(self) -> dict[str, list[str]]:
        """For users: SCIM attribute path → the source file columns it is computed from (column lineage)."""
        return self.lineage.get("users", {})

    def rejected_keys(self, table: str = "users") -> pd.Series:
        """The normalized keys of rejected rows of `table` (casefolded unless the key is an externalId).

        A change engine should hold these identities as they are rather than deprovision them: a user whose row
        became invalid has not left the IdP.
        """
        match = self.user_match if table == "users" else self.group_match
        keys = self.rejected.loc[self.rejected["table"].eq(table) & self.rejected["key"].notna(), "key"]
        keys = keys if match == "externalId" else keys.str.casefold()
        return keys.drop_duplicates().reset_index(drop=True)


# --- small vectorized helpers ------------------------------------------------------------------------------------


def _empty_text(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype=TEXT)


def _blank_to_na(values: pd.Series) -> pd.Series:
    values = values.astype(TEXT)
    return values.mask(values.eq("").fillna(False))


def _casefold(values: pd.Series) -> pd.Series:
    """Unicode casefolding: Arrow's lowercase for ASCII values (the same thing there, and fast), Python's casefold
    for the rest. (Not `ascii_lower`: pyarrow 26 garbles arrays whose offsets do not start at zero.)"""
    arrow = pa.array(values.array)
    folded = pd.Series(pd.array(pc.utf8_lower(arrow), dtype=TEXT), index=values.index)
    non_ascii = ~pd.Series(pc.string_is_ascii(arrow).fill_null(True).to_numpy(zero_copy_only=False), index=values.index)
    if non_ascii.any():
        folded[non_ascii] = values[non_ascii].str.casefold()
    return folded


def _shown(values: pd.Series) -> pd.Series:
    """Values as quoted in reasons: at most 60 characters, control characters made visible."""
    text = values.fillna("").astype(TEXT)
    short = text.str.slice(0, _SHOWN).str.replace(_CONTROL, "\ufffd", regex=True)
    return short.where(text.str.len().le(_SHOWN), short + "…")


def _flag(mask: pd.Series) -> pd.Series:
    return mask.fillna(False).astype(bool)


class _Problems:
    """Collects, per row, the fields at fault and the reasons (several problems join with "; ").

    Only the flags cover every row; reasons are kept for the flagged rows alone, so a clean million-row roster
    costs a few boolean operations.
    """

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self._flags = np.zeros(len(index), dtype=bool)
        self._found: list[tuple[str, pd.Series]] = []

    def add(self, mask: pd.Series, field_name: str, reason: pd.Series | str) -> None:
        """Flag the rows of `mask` with a reason: one text, or a Series holding at least the flagged rows."""
        flags = _flag(mask).to_numpy()
        if not flags.any():
            return
        flagged = self.index[flags]
        if isinstance(reason, str):
            texts = pd.Series(reason, index=flagged, dtype=TEXT)
        else:
            texts = reason.reindex(flagged).astype(TEXT)
        self._flags |= flags
        self._found.append((field_name, texts))

    @property
    def rejected(self) -> pd.Series:
        """Whether each row has a problem."""
        return pd.Series(self._flags, index=self.index)

    def explained(self) -> tuple[pd.Index, pd.Series, pd.Series]:
        """The flagged rows, their fields and their reasons (in the order the problems were added)."""
        flagged = self.index[self._flags]
        fields = _empty_text(flagged)
        reasons = _empty_text(flagged)
        for field_name, found in self._found:
            texts = found.reindex(flagged)
            here = texts.notna()
            first = here & reasons.isna()
            again = here & reasons.notna()
            reasons = reasons.where(~first, texts).where(~again, reasons + "; " + texts)
            listed = _flag(("; " + fields + "; ").str.contains(f"; {field_name}; ", regex=False))
            fields = fields.where(~first, field_name).where(~(again & ~listed), fields + "; " + field_name)
        return flagged, fields, reasons


def _table_rows(table: str, rows: pd.Series, keys: pd.Series, fields: pd.Series, reasons: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table": pd.Series(table, index=rows.index, dtype=TEXT),
            "row": rows.astype("int64"),
            "key": keys.astype(TEXT),
            "field": fields.astype(TEXT),
            "reason": reasons.astype(TEXT),
        }
    ).reset_index(drop=True)


def _empty_rejected() -> pd.DataFrame:
    return _table_rows("", pd.Series([], dtype="int64"), *(pd.Series([], dtype=TEXT) for _ in range(3)))


def _unreadable_rows(raw: RawTable) -> pd.DataFrame:
    reasons = raw.unreadable["reason"].astype(TEXT)
    return _table_rows(raw.name, raw.unreadable["row"], _empty_text(reasons.index), _empty_text(reasons.index), reasons)


# --- columns and rules -------------------------------------------------------------------------------------------


def _renamed(raw: RawTable, renames: dict[str, str], mapping: Mapping) -> pd.DataFrame:
    frame = raw.frame
    for source, target in renames.items():
        if source not in frame.columns and source not in raw.unsupported_columns:
            raise RosterError(
                f"{mapping.source} renames column {source!r} of {raw.source}, which has no such column "
                f"(columns found: {_listing(raw)})"
            )
        if target in frame.columns and target not in renames:
            raise RosterError(
                f"{mapping.source} renames column {source!r} of {raw.source} to {target!r}, "
                "but the file already has a column with that name"
            )
    return frame.rename(columns=renames)


def _listing(raw: RawTable) -> str:
    names = [*raw.frame.columns, *raw.unsupported_columns]
    if not names:
        return "none: the file is empty"
    listing = ", ".join(repr(n) for n in names[:40]) + (", …" if len(names) > 40 else "")
    if len(names) == 1 and any(sep in names[0] for sep in ";\t|"):
        listing += " — the file seems to use another separator than the comma; save it comma-separated"
    return listing


def _require(raw: RawTable, frame: pd.DataFrame, column: str, renames: dict[str, str], why: str) -> None:
    if frame.shape == (0, 0):
        return  # no rows at all (an empty file, a JSONL file without a record): nothing lacks the column
    original = next((s for s, t in renames.items() if t == column), column)
    if original in raw.unsupported_columns:
        raise RosterError(f"{raw.source}: column {original!r} {why}, but {raw.unsupported_columns[original]}")
    if column not in frame.columns:
        named = column if original == column else f"{original!r} (renamed to {column!r})"
        raise RosterError(f"{raw.source} has no column {named}, which {why} (columns found: {_listing(raw)})")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return _blank_to_na(frame[name])
    return _empty_text(frame.index)


def _evaluate(rule: AttributeRule, frame: pd.DataFrame) -> pd.Series:
    """The attribute's value for every row (vectorized), `<NA>` where it has none."""
    if rule.column is not None:
        values = _column(frame, rule.column)
    elif rule.join is not None:
        values = _empty_text(frame.index)
        for name in rule.join:
            part = _column(frame, name)
            joined = values + rule.separator + part
            values = values.where(part.isna(), part.where(values.isna(), joined))
    elif rule.template is not None:
        values = pd.Series("", index=frame.index, dtype=TEXT)
        for literal, field_name in template_parts(rule.template):
            if literal:
                values = values + literal
            if field_name is not None:
                values = values + _column(frame, field_name)
    else:
        values = pd.Series(rule.value, index=frame.index, dtype=TEXT)
    for transform in rule.transform:
        if transform == "lower":
            values = values.str.lower()
        elif transform == "upper":
            values = values.str.upper()
        else:
            values = values.str.strip()
    values = _blank_to_na(values)
    if rule.default is not None:
        values = values.fillna(rule.default)
    return values


def _check_columns(
    raw: RawTable,
    frame: pd.DataFrame,
    table_mapping: UserMapping | GroupMapping,
    mapping: Mapping,
    key_paths: tuple[str, ...],
) -> None:
    for path, rule in table_mapping.rules().items():
        explicit = not table_mapping.is_default(path)
        for column in rule.columns:
            if explicit:
                _require(raw, frame, column, table_mapping.columns, f"{mapping.source} maps onto {path}")
            elif path in key_paths:
                _require(raw, frame, column, table_mapping.columns, f"holds the {path} every row needs")
            elif column in raw.unsupported_columns:
                _require(raw, frame, column, table_mapping.columns, f"maps onto {path}")
    for number, clause in enumerate(table_mapping.scope, start=1):
        if clause.column is not None:
            _require(raw, frame, clause.column, table_mapping.columns, f"is used by scope clause {number}")
        elif clause.attribute not in table_mapping.rules():
            raise RosterError(
                f"{mapping.source}: scope clause {number} names attribute {clause.attribute}, "
                "which the mapping does not produce"
            )


def _lineage(table_mapping: UserMapping | GroupMapping, frame: pd.DataFrame) -> dict[str, list[str]]:
    originals = {target: source for source, target in table_mapping.columns.items()}
    return {
        path: [originals.get(c, c) for c in rule.columns if c in frame.columns]
        for path, rule in table_mapping.rules().items()
    }


# --- validation --------------------------------------------------------------------------------------------------


def _scan_bytes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per value: its length in UTF-8 bytes, and whether it holds a control character — from the Arrow buffers.

    In UTF-8, C0 controls and DEL are the bytes 0x00-0x1F and 0x7F (never part of a longer sequence), and the C1
    controls U+0080-U+009F are 0xC2 followed by 0x80-0x9F: one numpy pass over the bytes finds them all.
    """
    arrow = pa.array(values.array).cast(pa.large_string())
    if isinstance(arrow, pa.ChunkedArray):
        arrow = pa.concat_arrays(arrow.chunks) if arrow.num_chunks else pa.array([], pa.large_string())
    count = len(arrow)
    offsets = np.frombuffer(arrow.buffers()[1], dtype=np.int64)[arrow.offset : arrow.offset + count + 1]
    valid = ~np.asarray(arrow.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.where(valid, np.diff(offsets), 0)
    data_buffer = arrow.buffers()[2]
    start, stop = int(offsets[0]), int(offsets[-1])
    has_control = np.zeros(count, dtype=bool)
    if data_buffer is not None and stop > start:
        data = np.frombuffer(data_buffer, dtype=np.uint8)[start:stop]
        control = (data < 0x20) | (data == 0x7F)
        control[:-1] |= (data[:-1] == 0xC2) & (data[1:] >= 0x80) & (data[1:] <= 0x9F)
        positions = np.flatnonzero(control) + start
        has_control[np.searchsorted(offsets, positions, side="right") - 1] = True
        has_control &= valid
    return lengths, has_control


def _check_values(
    problems: _Problems, attributes: dict[str, pd.Series], rules: dict[str, AttributeRule], limit: int
) -> None:
    for path, values in attributes.items():
        if path == "active":
            continue
        present = values.notna()
        if not present.any():
            continue
        label = rules[path].label(path)
        byte_lengths, control = _scan_bytes(values)
        has_control = pd.Series(control, index=values.index)
        if has_control.any():
            found = values[has_control].str.extract(f"({_CONTROL})", expand=False)
            code = found.map(lambda c: f"U+{ord(c):04X}").astype(TEXT)
            problems.add(has_control, label, f"{label} contains a control character (" + code + ")")
        # A value has at most as many characters as bytes: count characters only where the bytes exceed the limit.
        maybe_long = pd.Series(byte_lengths > limit, index=values.index)
        if maybe_long.any():
            length = values[maybe_long].str.len()
            too_long = length.gt(limit).reindex(values.index, fill_value=False)
            if too_long.any():
                size = length[length.gt(limit)].astype(str).astype(TEXT)
                problems.add(too_long, label, f"{label} is " + size + f" characters long (the limit is {limit})")
        if path.lower().startswith("emails"):
            bad = present & ~_flag(values.str.contains(_EMAIL, regex=True))
            if bad.any():
                shown = _shown(values[bad])
                problems.add(bad, label, f"{label} '" + shown + "' is not an e-mail address (one @, no spaces)")


def _check_key(problems: _Problems, values: pd.Series, label: str) -> None:
    problems.add(values.isna(), label, f"{label} is empty")
    padded = values.notna() & values.ne(values.str.strip())
    problems.add(
        padded,
        label,
        f"{label} '"
        + _shown(values[_flag(padded)])
        + "' has leading or trailing spaces (the trim transform removes them)",
    )


def _check_duplicates(problems: _Problems, values: pd.Series, norm: pd.Series, label: str, *, casefold: bool) -> None:
    codes, _ = pd.factorize(norm, use_na_sentinel=True)
    counts = np.bincount(codes[codes >= 0], minlength=1)
    duplicated = pd.Series((codes >= 0) & (counts[np.maximum(codes, 0)] > 1), index=norm.index)
    if not duplicated.any():
        return
    dup_norm = norm[duplicated]
    dup_rows = pd.Series(problems.index, index=problems.index, dtype="int64")[duplicated]
    groups = dup_rows.groupby(dup_norm, sort=False)
    first = groups.transform("min")
    second = dup_rows.where(dup_rows.ne(first)).groupby(dup_norm, sort=False).transform("min")
    other = first.where(dup_rows.ne(first), second).astype("int64")
    count = groups.transform("size")
    how = "case-insensitive" if casefold else "exact match"
    suffix = pd.Series(f" ({how})", index=dup_rows.index, dtype=TEXT).where(
        count.le(2), f" ({how}; " + count.astype(str).astype(TEXT) + " rows share it)"
    )
    reason = f"{label} '" + _shown(values[duplicated]) + "' duplicates row " + other.astype(str).astype(TEXT) + suffix
    problems.add(duplicated, label, reason.reindex(problems.index))


def _parse_active(problems: _Problems, values: pd.Series, label: str) -> pd.Series:
    word = values.str.strip().str.lower()
    true = _flag(word.isin(_TRUE))
    false = _flag(word.isin(_FALSE))
    invalid = values.notna() & ~true & ~false
    invalid = _flag(invalid)
    if invalid.any():
        shown = _shown(values[invalid])
        problems.add(invalid, label, f"{label} '" + shown + "' is not one of true, false, yes, no, 1, 0")
    return ~false


# --- scoping -----------------------------------------------------------------------------------------------------


def _clause_holds(clause: ScopeClause, values: pd.Series) -> pd.Series:
    if clause.ignore_case:
        values = _casefold(values)
    value = clause.value
    if clause.ignore_case and isinstance(value, str) and clause.operator != "matches":
        value = value.casefold()
    elif clause.ignore_case and isinstance(value, list):
        value = [v.casefold() for v in value]
    empty = values.isna()
    if clause.operator == "is_empty":
        return empty
    if clause.operator == "is_not_empty":
        return ~empty
    if isinstance(value, list):
        within = _flag(values.isin(value))
        return within if clause.operator == "in" else ~within
    assert isinstance(value, str)
    if clause.operator == "equals":
        return _flag(values.eq(value))
    if clause.operator == "not_equals":
        return ~_flag(values.eq(value))
    flags = re.IGNORECASE if clause.ignore_case else 0
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression", UserWarning)
            return _flag(values.str.contains(value, regex=True, flags=flags))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Arrow's RE2 lacks some Python features (look-around, back-references); fall back to Python's re.
        pattern = re.compile(value, flags)
        found = values.astype(object).map(lambda v: bool(pattern.search(v)), na_action="ignore")
        return _flag(found)


def _in_scope(
    clauses: list[ScopeClause], frame: pd.DataFrame, attributes: dict[str, pd.Series], active: pd.Series | None
) -> pd.Series:
    holds = pd.Series(True, index=frame.index)
    for clause in clauses:
        if clause.column is not None:
            values = _column(frame, clause.column)
        elif clause.attribute == "active" and active is not None:
            values = active.map({True: "true", False: "false"}).astype(TEXT)
        else:
            assert clause.attribute is not None
            values = attributes[clause.attribute]
        holds &= _clause_holds(clause, values)
    return holds


# --- tables ------------------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """One mapped, validated table before it is split into accepted, rejected and out of scope."""

    frame: pd.DataFrame
    attributes: dict[str, pd.Series]
    key: pd.Series
    name_norm: pd.Series
    problems: _Problems
    in_scope: pd.Series


def _build_table(
    raw: RawTable,
    table_mapping: UserMapping | GroupMapping,
    mapping: Mapping,
    key_path: str,
    name_path: str,
) -> tuple[_Table, pd.Series | None, dict[str, list[str]]]:
    frame = _renamed(raw, table_mapping.columns, mapping)
    _check_columns(raw, frame, table_mapping, mapping, (name_path, key_path))
    rules = table_mapping.rules()
    attributes = {path: _evaluate(rule, frame) for path, rule in rules.items()}
    problems = _Problems(frame.index)
    for path in dict.fromkeys((name_path, key_path)):
        _check_key(problems, attributes[path], rules[path].label(path))
    _check_values(problems, attributes, rules, mapping.max_value_length)
    active = None
    if "active" in attributes:
        active = _parse_active(problems, attributes["active"], rules["active"].label("active"))
    name = attributes[name_path]
    name_norm = _casefold(name)
    _check_duplicates(problems, name, name_norm, rules[name_path].label(name_path), casefold=True)
    if key_path != name_path:
        key = attributes[key_path]
        _check_duplicates(problems, key, key, rules[key_path].label(key_path), casefold=False)
    in_scope = _in_scope(table_mapping.scope, frame, attributes, active)
    table = _Table(frame, attributes, attributes[key_path], name_norm, problems, in_scope)
    return table, active, _lineage(table_mapping, frame)


def _normalized(key: pd.Series, match: str) -> pd.Series:
    return key if match == "externalId" else _casefold(key)


def _output(table: _Table, keep: pd.Series, match: str, active: pd.Series | None) -> pd.DataFrame:
    key = table.key[keep]
    columns: dict[str, pd.Series] = {
        "key": key,
        "key_norm": _normalized(key, match),
        "row": pd.Series(key.index, index=key.index, dtype="int64"),
    }
    for path, values in table.attributes.items():
        columns[path] = active[keep].astype(bool) if path == "active" and active is not None else values[keep]
    return pd.DataFrame(columns).reset_index(drop=True)


def _positions(needles: pd.Series, haystack: pd.Series) -> np.ndarray:
    """For each needle, the position of its first occurrence in `haystack`; -1 when absent or missing."""
    found = pc.index_in(pa.array(needles.array), value_set=pa.array(haystack.array))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _take(values: pd.Series, positions: np.ndarray, index: pd.Index) -> pd.Series:
    """`values` at `positions` (-1 gives `<NA>`), on `index`."""
    taken = values.reset_index(drop=True).reindex(positions)
    return pd.Series(taken.array, index=index)


def _resolve_managers(users: _Outcome) -> pd.DataFrame:
    """Replace manager user_names by the manager's key; an unusable manager is dropped with a warning row."""
    out = users.out
    manager = out[MANAGER]
    wanted = manager.notna()
    if not wanted.any():
        return _empty_rejected()
    manager_norm = _casefold(manager)
    resolved = _take(out["key"], _positions(manager_norm, users.accepted_name_norm), manager.index)
    out[MANAGER] = resolved
    missing = _flag(wanted & resolved.isna())
    if not missing.any():
        return _empty_rejected()
    lost = manager_norm[missing]
    shown = "manager '" + _shown(manager[missing]) + "'"
    rejected_row = users.rejected_row_by_name(lost)
    reason = (shown + " is not a user in the roster").where(
        rejected_row.isna(), shown + " was rejected (users row " + rejected_row.astype(str) + ")"
    )
    reason = reason.where(~users.excluded_names(lost), shown + " is out of scope")
    return _table_rows(
        "users",
        out.loc[missing, "row"],
        out.loc[missing, "key"],
        pd.Series("manager", index=lost.index, dtype=TEXT),
        reason + "; manager left empty",
    )


@dataclass(frozen=True)
class _Outcome:
    """A validated table split three ways, for the memberships and managers that refer to it by name."""

    table: _Table
    name_path: str
    rejected: pd.Series
    excluded: pd.Series
    accepted: pd.Series
    out: pd.DataFrame

    def key_norm_by_name(self, names_norm: pd.Series) -> tuple[pd.Series, np.ndarray]:
        """The accepted identity's key_norm for each casefolded name (`<NA>` when none is accepted), and its
        position in `out` (-1 when none)."""
        positions = _positions(names_norm, self.accepted_name_norm)
        return _take(self.out["key_norm"], positions, names_norm.index), positions

    @property
    def accepted_name_norm(self) -> pd.Series:
        """The casefolded names of the accepted identities, in the order of `out`."""
        return self.table.name_norm[self.accepted].reset_index(drop=True)

    def rejected_row_by_name(self, names_norm: pd.Series) -> pd.Series:
        """The first rejected row holding each casefolded name, `<NA>` when none."""
        rows = pd.Series(self.table.frame.index[self.rejected.to_numpy()], dtype="Int64")
        return _take(rows, _positions(names_norm, self.table.name_norm[self.rejected]), names_norm.index)

    def excluded_names(self, names_norm: pd.Series) -> pd.Series:
        """Whether each casefolded name belongs to an out-of-scope identity."""
        return _flag(names_norm.isin(self.table.name_norm[self.excluded].dropna()))


def _refer(
    problems: _Problems, names: pd.Series, column: str, what: str, outcome: _Outcome | None
) -> tuple[pd.Series, np.ndarray, pd.Series]:
    """Resolve membership names against a table: key_norm (or <NA>), position in the accepted identities (or -1),
    and whether out of scope; names that cannot be resolved are reported to `problems`."""

    def shown(mask: pd.Series) -> pd.Series:
        return f"{column} '" + _shown(names[mask]) + "'"

    if outcome is None:
        present = names.notna()
        problems.add(present, column, shown(present) + f" is not a {what} in the roster (there is no {what}s table)")
        return _empty_text(names.index), np.full(len(names), -1), pd.Series(False, index=names.index)
    norm = _casefold(names)
    key_norm, positions = outcome.key_norm_by_name(norm)
    # Only names that found no accepted identity can be rejected or out of scope: look those up alone.
    missing = _flag(names.notna() & key_norm.isna())
    rejected_row = pd.Series(pd.NA, index=names.index, dtype="Int64")
    out_of_scope = pd.Series(False, index=names.index)
    if missing.any():
        rejected_row[missing] = outcome.rejected_row_by_name(norm[missing])
        out_of_scope[missing] = outcome.excluded_names(norm[missing])
    was_rejected = _flag(rejected_row.notna())
    if was_rejected.any():
        rows = rejected_row[was_rejected].astype(str).astype(TEXT)
        problems.add(was_rejected, column, shown(was_rejected) + f" was rejected ({what}s row " + rows + ")")
    unknown = _flag(names.notna() & key_norm.isna() & rejected_row.isna() & ~out_of_scope)
    if unknown.any():
        problems.add(unknown, column, shown(unknown) + f" is not a {what} in the roster")
    return key_norm, positions, out_of_scope


def _memberships(
    raw: RawTable, mapping: Mapping, users: _Outcome, groups: _Outcome | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    renames = mapping.memberships.columns
    frame = _renamed(raw, renames, mapping)
    for column in ("group_name", "user_name"):
        _require(raw, frame, column, renames, "every membership row needs")
    group_name = _column(frame, "group_name")
    user_name = _column(frame, "user_name")
    problems = _Problems(frame.index)
    problems.add(group_name.isna(), "group_name", "group_name is empty")
    problems.add(user_name.isna(), "user_name", "user_name is empty")
    group_key, group_at, group_out_of_scope = _refer(problems, group_name, "group_name", "group", groups)
    user_key, user_at, user_out_of_scope = _refer(problems, user_name, "user_name", "user", users)

    rejected = problems.rejected
    excluded = ~rejected & (user_out_of_scope | group_out_of_scope)
    flagged, fields, reasons = problems.explained()
    accepted = (~rejected & ~excluded).to_numpy()
    pairs = pd.DataFrame(
        {
            "group_key_norm": group_key[accepted],
            "user_key_norm": user_key[accepted],
            "row": pd.Series(frame.index[accepted], index=frame.index[accepted], dtype="int64"),
        }
    )
    # Pairs compared by the identities' positions: integers hash much faster than the names.
    pair_ids = user_at[accepted].astype(np.int64) * (len(groups.out) + 1 if groups else 1) + group_at[accepted]
    repeated = pd.Series(pair_ids, index=pairs.index).duplicated()
    pairs = pairs[~repeated].reset_index(drop=True)
    key = (group_name.fillna("") + " / " + user_name.fillna("")).mask(group_name.isna() & user_name.isna())
    rejected_rows = _table_rows(
        "memberships",
        pd.Series(flagged, dtype="int64"),
        key[flagged].reset_index(drop=True),
        fields.reset_index(drop=True),
        reasons.reset_index(drop=True),
    )
    stats = {
        "memberships_read": raw.rows_read,
        "memberships_accepted": len(pairs),
        "memberships_rejected": int(rejected.sum()) + len(raw.unreadable),
        "memberships_out_of_scope": int(excluded.sum()),
        "memberships_duplicates": int(repeated.sum()),
    }
    return pairs, pd.concat([_unreadable_rows(raw), rejected_rows], ignore_index=True), stats


def _split(table: _Table) -> tuple[pd.Series, pd.Series, pd.Series]:
    rejected = table.problems.rejected
    excluded = ~rejected & ~table.in_scope
    return rejected, excluded, ~rejected & ~excluded


def _rejected_rows(name: str, table: _Table) -> pd.DataFrame:
    flagged, fields, reasons = table.problems.explained()
    return _table_rows(
        name,
        pd.Series(flagged, dtype="int64"),
        table.key[flagged].reset_index(drop=True),
        fields.reset_index(drop=True),
        reasons.reset_index(drop=True),
    )


def _empty_groups() -> pd.DataFrame:
    columns: dict[str, pd.Series] = {
        "key": pd.Series([], dtype=TEXT),
        "key_norm": pd.Series([], dtype=TEXT),
        "row": pd.Series([], dtype="int64"),
    }
    columns.update({path: pd.Series([], dtype=TEXT) for path in GroupMapping().rules()})
    return pd.DataFrame(columns)


def _empty_memberships() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group_key_norm": pd.Series([], dtype=TEXT),
            "user_key_norm": pd.Series([], dtype=TEXT),
            "row": pd.Series([], dtype="int64"),
        }
    )


def build_roster(raw: RawRoster, mapping: Mapping | None = None, *, shards: int) -> Roster:
    """Map, validate and scope a raw roster into the normalized `Roster`.

    Rows that fail validation go to `Roster.rejected` with a reason; out-of-scope identities are left out and
    counted in `Roster.stats`. Raises `RosterError` when the roster cannot be used at all (a required column is
    missing, the mapping names a column the files do not have) and `ValueError` when `shards` < 1.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    mapping = mapping if mapping is not None else Mapping()
    user_match = mapping.users.match
    table, active, user_lineage = _build_table(raw.users, mapping.users, mapping, user_match, "userName")
    rejected, excluded, accepted = _split(table)
    users_out = _output(table, accepted, user_match, active)
    users_out.insert(2, "shard", stable_shard(users_out["key_norm"], shards))
    users = _Outcome(table, "userName", rejected, excluded, accepted, users_out)
    manager_warnings = _empty_rejected()
    if MANAGER in users_out.columns:
        manager_warnings = _resolve_managers(users)
    stats = {
        "users_read": raw.users.rows_read,
        "users_accepted": len(users_out),
        "users_rejected": int(rejected.sum()) + len(raw.users.unreadable),
        "users_out_of_scope": int(excluded.sum()),
        "users_manager_dropped": len(manager_warnings),
    }
    rejected_parts = [_unreadable_rows(raw.users), _rejected_rows("users", table)]
    lineage = {"users": user_lineage}

    groups: _Outcome | None = None
    group_match = mapping.groups.match
    if raw.groups is not None:
        table, _, lineage["groups"] = _build_table(raw.groups, mapping.groups, mapping, group_match, "displayName")
        rejected, excluded, accepted = _split(table)
        group_out = _output(table, accepted, group_match, None)
        groups = _Outcome(table, "displayName", rejected, excluded, accepted, group_out)
        rejected_parts += [_unreadable_rows(raw.groups), _rejected_rows("groups", table)]
    stats |= {
        "groups_read": 0 if raw.groups is None else raw.groups.rows_read,
        "groups_accepted": 0 if groups is None else len(groups.out),
        "groups_rejected": 0
        if groups is None or raw.groups is None
        else int(groups.rejected.sum()) + len(raw.groups.unreadable),
        "groups_out_of_scope": 0 if groups is None else int(groups.excluded.sum()),
    }

    memberships = _empty_memberships()
    if raw.memberships is not None:
        memberships, membership_rejected, membership_stats = _memberships(raw.memberships, mapping, users, groups)
        rejected_parts.append(membership_rejected)
        stats |= membership_stats
    else:
        names = ("read", "accepted", "rejected", "out_of_scope", "duplicates")
        stats |= {f"memberships_{name}": 0 for name in names}
    return Roster(
        users=users_out,
        groups=_empty_groups() if groups is None else groups.out,
        memberships=memberships,
        rejected=pd.concat([_empty_rejected(), *rejected_parts], ignore_index=True),
        warnings=manager_warnings,
        stats=stats,
        user_match=user_match,
        group_match=group_match,
        lineage=lineage,
    )
