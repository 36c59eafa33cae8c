"""Roster sources: where the identities come from, read as text tables (`RawRoster`).

A source only reads; mapping, validation and scoping happen in `scim_pipeline.sync.plan.roster.build_roster`. Every
source produces the same tables with the default roster columns (docs/sources.md): a folder of files, LDAP / Active
Directory, Entra ID, Okta, a SCIM service provider, a SQL database, or DataFrames from an upstream asset. Each says
what it read in a `SourceReport` (`read_with_report()`, or `last_report` after `read()`); the connectors that can
read incrementally keep a watermark in a `WatermarkStore` and the last complete roster in a cache folder.
"""

from scim_pipeline.sources._incremental import (
    FullReadPolicy,
    MemoryWatermarkStore,
    ReportingSource,
    SourceReport,
    WatermarkStore,
)
from scim_pipeline.sources._raw import (
    OPTIONAL_TABLES,
    TABLES,
    TEXT,
    RawRoster,
    RawTable,
    RosterError,
    RosterSource,
)
from scim_pipeline.sources.dataframe import DataFrameRosterSource
from scim_pipeline.sources.folder import FORMATS, FolderRosterSource, read_table_file
from scim_pipeline.sources.selection import (
    SourceKind,
    build_source,
    connector_source,
    connector_values,
    source_from_env,
)

__all__ = [
    "FORMATS",
    "OPTIONAL_TABLES",
    "TABLES",
    "TEXT",
    "DataFrameRosterSource",
    "FolderRosterSource",
    "FullReadPolicy",
    "MemoryWatermarkStore",
    "RawRoster",
    "RawTable",
    "ReportingSource",
    "RosterError",
    "RosterSource",
    "SourceKind",
    "SourceReport",
    "WatermarkStore",
    "build_source",
    "connector_source",
    "connector_values",
    "read_table_file",
    "source_from_env",
]
