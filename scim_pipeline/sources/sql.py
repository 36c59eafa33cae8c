"""A SQL database as a roster source, through SQLAlchemy (any database it has a driver for).

Each table (`users`, and optionally `groups` and `memberships`) is a table name (`schema.table` allowed) or a
`SELECT` whose column names are the roster columns (alias them: `SELECT login AS user_name, …`). Values become text
as the file source reads them: `NULL` is no value, booleans are `true` / `false`, numbers and dates are written out
(a float holding an integer keeps its `.0`; cast in SQL for another form). Rows are numbered from 1 in the order the
database returns them, so give the query an `ORDER BY` for stable row numbers. Every read is full.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Self

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources._incremental import SourceReport
from scim_pipeline.sources._raw import TABLES, TEXT, RawRoster, RawTable, RosterError
from scim_pipeline.sources._settings import env_settings
from scim_pipeline.sources._signal import ChangeSignal, digest
from scim_pipeline.sources._values import as_text

__all__ = ["SqlRosterSource", "SqlSettings"]

_FETCH_ROWS: Final = 10_000


class SqlSettings(BaseModel):
    """Where the roster tables are in a database (`SCIM_SQL_*`). For each table give a name or a query."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr = Field(
        description="SQLAlchemy database URL, e.g. postgresql+psycopg://reader:…@db/hr (a secret: it may hold a "
        "password)."
    )
    users_table: str | None = Field(None, description="Table (or schema.table) holding the users.")
    users_query: str | None = Field(None, description="SELECT returning the user columns.")
    groups_table: str | None = Field(None, description="Table holding the groups (optional).")
    groups_query: str | None = Field(None, description="SELECT returning group_name, external_id (optional).")
    memberships_table: str | None = Field(None, description="Table holding the memberships (optional).")
    memberships_query: str | None = Field(None, description="SELECT returning group_name, user_name (optional).")
    change_query: str | None = Field(
        None,
        description="A cheap SELECT whose rows change whenever the roster does, polled by the leaver sensor (e.g. "
        "SELECT max(updated_at), count(*) FROM hr.people). Unset: the sensor reads the roster tables whole.",
    )

    @model_validator(mode="after")
    def _one_per_table(self) -> Self:
        for table in ("users", "groups", "memberships"):
            if getattr(self, f"{table}_table") and getattr(self, f"{table}_query"):
                raise ValueError(f"give SCIM_SQL_{table.upper()}_TABLE or SCIM_SQL_{table.upper()}_QUERY, not both")
        if not (self.users_table or self.users_query):
            raise ValueError("SCIM_SQL_USERS_TABLE or SCIM_SQL_USERS_QUERY is required")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """From `SCIM_SQL_*`. Raises `ConfigurationError` naming the variable."""
        return env_settings(cls, env, prefix="SCIM_SQL_")

    def display_url(self) -> str:
        """The URL with its password masked, for messages and metadata."""
        try:
            return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)
        except ArgumentError:
            return "(an unreadable SCIM_SQL_URL)"


@dataclass
class SqlRosterSource:
    """Reads the roster tables from a database (see the module docstring)."""

    settings: SqlSettings
    last_report: SourceReport | None = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        return f"SqlRosterSource({self.settings.display_url()!r})"

    def read(self) -> RawRoster:
        """Read the whole roster. Raises `RosterError` (never quoting the URL's password)."""
        return self.read_with_report()[0]

    def read_with_report(self) -> tuple[RawRoster, SourceReport]:
        started = time.perf_counter()
        label = self.settings.display_url()
        try:
            engine = sa.create_engine(self.settings.url.get_secret_value())
        except (ArgumentError, ImportError, SQLAlchemyError) as error:
            raise ConfigurationError(f"SCIM_SQL_URL cannot be used ({type(error).__name__})") from None
        tables: dict[str, RawTable | None] = {}
        queries = 0
        try:
            with engine.connect() as connection:
                for table in ("users", "groups", "memberships"):
                    statement = self._statement(table)
                    if statement is None:
                        tables[table] = None
                        continue
                    queries += 1
                    tables[table] = self._read_table(connection, table, statement, label)
        except SQLAlchemyError as error:
            # The driver's message may quote the URL or the server's words: name the failure only.
            raise RosterError(f"reading the roster from {label} failed ({type(error).__name__})") from None
        finally:
            engine.dispose()
        users = tables["users"]
        assert users is not None
        roster = RawRoster(users=users, groups=tables["groups"], memberships=tables["memberships"])
        report = SourceReport(
            source="sql",
            server=label,
            mode="full",
            reason="the sql source always reads everything",
            rows={name: len(raw.frame) if raw is not None else 0 for name, raw in tables.items()},
            entries_fetched=sum(len(raw.frame) for raw in tables.values() if raw is not None),
            requests=queries,
            pages=queries,
            watermark_before=None,
            watermark_after=None,
            wall_time_s=time.perf_counter() - started,
        )
        self.last_report = report
        return roster, report

    def change_signal(self) -> ChangeSignal:
        """The rows of `SCIM_SQL_CHANGE_QUERY`, or without it a digest of every roster table's rows (a full read of
        the database, still no call to the target). Raises `RosterError` (never quoting the URL's password)."""
        label = self.settings.display_url()
        query = self.settings.change_query
        statements = (
            [("change", sa.text(query))]
            if query
            else [(table, statement) for table in TABLES if (statement := self._statement(table)) is not None]
        )
        try:
            engine = sa.create_engine(self.settings.url.get_secret_value())
        except (ArgumentError, ImportError, SQLAlchemyError) as error:
            raise ConfigurationError(f"SCIM_SQL_URL cannot be used ({type(error).__name__})") from None
        parts: list[object] = []
        try:
            with engine.connect() as connection:
                for table, statement in statements:
                    result = connection.execution_options(yield_per=_FETCH_ROWS).execute(statement)
                    parts.append(table)
                    parts.extend(tuple(as_text(value) for value in row) for row in result)
        except SQLAlchemyError as error:
            which = "SCIM_SQL_CHANGE_QUERY" if query else "the roster tables"
            raise RosterError(f"polling {which} on {label} failed ({type(error).__name__})") from None
        finally:
            engine.dispose()
        probe = "SCIM_SQL_CHANGE_QUERY" if query else f"a full read of {len(statements)} roster tables"
        return ChangeSignal(digest(parts), f"{probe} on {label}", requests=len(statements))

    def _statement(self, table: str) -> sa.Executable | None:
        name: str | None = getattr(self.settings, f"{table}_table")
        query: str | None = getattr(self.settings, f"{table}_query")
        if query:
            return sa.text(query)
        if name:
            schema, _, bare = name.rpartition(".")
            return sa.select(sa.text("*")).select_from(sa.table(bare, schema=schema or None))
        return None

    def _read_table(self, connection: sa.Connection, table: str, statement: sa.Executable, label: str) -> RawTable:
        result = connection.execution_options(yield_per=_FETCH_ROWS).execute(statement)
        names = [str(name).strip() for name in list(result.keys())]  # a Result iterates rows, not names
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise RosterError(f"the {table} query on {label} returns the column {duplicates[0]!r} twice; alias one")
        columns: list[list[str | None]] = [[] for _ in names]
        for row in result:
            for column, value in zip(columns, row, strict=True):
                column.append(as_text(value))
        frame = pd.DataFrame({name: pd.array(values, dtype=TEXT) for name, values in zip(names, columns, strict=True)})
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
        return RawTable(table, f"sql {label} {table}", frame)
