"""Roster sources: where the identities come from, read as text tables (`RawRoster`).

A source only reads; mapping, validation and scoping happen in `scim_pipeline.sync.roster.build_roster`.
"""

from scim_pipeline.sources._raw import (
    OPTIONAL_TABLES,
    TABLES,
    TEXT,
    RawRoster,
    RawTable,
    RosterError,
    RosterSource,
)
from scim_pipeline.sources.folder import FORMATS, FolderRosterSource, read_table_file

__all__ = [
    "FORMATS",
    "OPTIONAL_TABLES",
    "TABLES",
    "TEXT",
    "FolderRosterSource",
    "RawRoster",
    "RawTable",
    "RosterError",
    "RosterSource",
    "read_table_file",
]
