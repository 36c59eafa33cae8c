"""What every roster source hands to the sync engine: tables of text, exactly as the IdP wrote them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import pandas as pd

from scim_pipeline.scim.errors import ScimPipelineError

__all__ = [
    "OPTIONAL_TABLES",
    "TABLES",
    "TEXT",
    "RawRoster",
    "RawTable",
    "RosterError",
    "RosterSource",
    "empty_unreadable",
]

TABLES: Final = ("users", "groups", "memberships")
OPTIONAL_TABLES: Final = ("groups", "memberships")

#: The dtype of every roster value: pandas' nullable string, stored in Arrow (fast vectorized string ops).
TEXT: Final = pd.StringDtype("pyarrow")


class RosterError(ScimPipelineError):
    """A roster cannot be read or does not have the shape a sync needs (names the file and what is wrong).

    Problems confined to single rows are not errors: those rows are set aside with a reason instead.
    """


def empty_unreadable() -> pd.DataFrame:
    """An empty frame of rows a reader could not turn into values (columns `row`, `reason`)."""
    return pd.DataFrame({"row": pd.Series([], dtype="int64"), "reason": pd.Series([], dtype=TEXT)})


@dataclass(frozen=True)
class RawTable:
    """One roster table as read, before mapping and validation.

    Attributes:
        name: `users`, `groups` or `memberships`.
        source: where the table came from, for messages (a file path for folder sources).
        frame: every column the source holds, as `TEXT` (no type inference: `00123`, `NA` and `true` stay
            text). Empty cells are `""` or `<NA>`; both mean "no value". The index, named `row`, is the 1-based
            row number a person sees when opening the file (for CSV the header is row 1, so data starts at 2).
        unreadable: rows the reader could not turn into values (`row`, `reason`), e.g. a CSV row with the wrong
            number of fields or a JSONL line that is not JSON. They are reported as rejected rows.
        unsupported_columns: columns that cannot be read as text (e.g. a Parquet list column), with why. They are
            ignored unless the mapping uses them, which is then an error.
    """

    name: str
    source: str
    frame: pd.DataFrame
    unreadable: pd.DataFrame = field(default_factory=empty_unreadable)
    unsupported_columns: dict[str, str] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        """How many data rows the source holds, readable or not."""
        return len(self.frame) + len(self.unreadable)


@dataclass(frozen=True)
class RawRoster:
    """The three tables of a roster; `groups` and `memberships` are optional."""

    users: RawTable
    groups: RawTable | None = None
    memberships: RawTable | None = None


@runtime_checkable
class RosterSource(Protocol):
    """Anything that can produce a roster: a folder of files today, an IdP connector tomorrow."""

    def read(self) -> RawRoster:
        """Read the whole roster. Raises `RosterError` when it cannot be read at all."""
        ...
