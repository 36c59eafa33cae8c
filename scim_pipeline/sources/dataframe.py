"""DataFrames as a roster source: a user's own asset (an HR model, a dbt table loaded by their IO manager) feeds the
roster, so lineage runs from their data to the SCIM target.

The frames hold the roster columns (`user_name`, `email`, …; docs/mapping.md), any other columns the mapping may
use, and any dtypes: values are turned into text the way the SQL source does (`NaN`/`None` is no value, booleans
`true`/`false`, timestamps ISO 8601). Rows are numbered from 1 in frame order; the frames' own index is ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from scim_pipeline.sources._incremental import SourceReport
from scim_pipeline.sources._raw import TEXT, RawRoster, RawTable, RosterError
from scim_pipeline.sources._values import as_text

__all__ = ["DataFrameRosterSource"]


def _text_table(frame: object, table: str, label: str) -> RawTable:
    if not isinstance(frame, pd.DataFrame):
        raise RosterError(f"the {table} table from {label} is a {type(frame).__name__}, not a pandas DataFrame")
    names = [str(name).strip() for name in frame.columns]
    for position, name in enumerate(names):
        if name in names[:position]:
            raise RosterError(f"the {table} table from {label} has the column {name!r} twice; rename one")
    columns: dict[str, pd.api.extensions.ExtensionArray] = {}
    unsupported: dict[str, str] = {}
    for name, (_, values) in zip(names, frame.items(), strict=True):
        cells = values.tolist()
        if any(isinstance(value, list | dict | tuple | set) for value in cells):
            unsupported[name] = "it holds lists or mappings, which cannot be read as text"
            continue
        columns[name] = pd.array([as_text(value) for value in cells], dtype=TEXT)
    text = pd.DataFrame(columns, index=pd.RangeIndex(1, len(frame) + 1, name="row"))
    return RawTable(table, f"{label} {table}", text, unsupported_columns=unsupported)


@dataclass
class DataFrameRosterSource:
    """A roster from DataFrames: `users` (required), `groups` and `memberships` (optional)."""

    users: pd.DataFrame
    groups: pd.DataFrame | None = None
    memberships: pd.DataFrame | None = None
    label: str = "upstream asset"
    last_report: SourceReport | None = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        return f"DataFrameRosterSource({self.label!r}, users={len(self.users)} rows)"

    def read(self) -> RawRoster:
        """The frames as text tables. Raises `RosterError` for a frame that is not a DataFrame or a column twice."""
        return self.read_with_report()[0]

    def read_with_report(self) -> tuple[RawRoster, SourceReport]:
        started = time.perf_counter()
        roster = RawRoster(
            users=_text_table(self.users, "users", self.label),
            groups=_text_table(self.groups, "groups", self.label) if self.groups is not None else None,
            memberships=(
                _text_table(self.memberships, "memberships", self.label) if self.memberships is not None else None
            ),
        )
        rows = {
            "users": len(roster.users.frame),
            "groups": len(roster.groups.frame) if roster.groups is not None else 0,
            "memberships": len(roster.memberships.frame) if roster.memberships is not None else 0,
        }
        report = SourceReport(
            source="dataframe",
            server=self.label,
            mode="full",
            reason="DataFrames are handed over whole",
            rows=rows,
            entries_fetched=sum(rows.values()),
            requests=0,
            pages=0,
            watermark_before=None,
            watermark_after=None,
            wall_time_s=time.perf_counter() - started,
        )
        self.last_report = report
        return roster, report
