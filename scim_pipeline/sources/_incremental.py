"""What the connector sources (LDAP, Entra ID, Okta, SCIM, SQL) share: the report, the watermark protocol, the
snapshot cache, the full-or-incremental decision and the turn from a directory snapshot into a `RawRoster`.

A connector reads its IdP into a `Snapshot`: users and groups keyed by the IdP's own reference (an object id that
survives renames and moves) and the direct membership edges between them (a member may be a group: nested groups
are flattened here, loops tolerated). An incremental read fetches only what changed since the watermark and merges
it into the last snapshot, kept as Parquet files in the cache folder, so the roster handed to the engine is always
complete.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Protocol, runtime_checkable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from scim_pipeline.sources._raw import TEXT, RawRoster, RawTable

__all__ = [
    "GROUP_COLUMNS",
    "USER_COLUMNS",
    "Delta",
    "FullReadPolicy",
    "MemoryWatermarkStore",
    "ReportingSource",
    "Snapshot",
    "SnapshotSource",
    "SourceReport",
    "StaleWatermarkError",
    "WatermarkStore",
    "roster_from_snapshot",
]

#: The default roster columns (docs/mapping.md), in the order a connector writes them.
USER_COLUMNS: Final = (
    "user_name",
    "external_id",
    "given_name",
    "family_name",
    "display_name",
    "email",
    "active",
    "department",
    "title",
    "employee_number",
    "manager",
)
GROUP_COLUMNS: Final = ("group_name", "external_id")

#: Snapshot columns besides the roster's: the IdP's reference of each entry (an object id that a rename or a move
#: does not change: entryUUID, objectGUID, Graph and Okta ids), which names it in messages and survives into the
#: roster tables as an extra column, and the manager's reference, resolved at the end.
REF: Final = "source_ref"
MANAGER_REF: Final = "manager_ref"
#: The entry's current name where the IdP also refers to entries by name (an LDAP DN): how a reference by name is
#: turned into a `source_ref` when the entry named was not read again.
NAME: Final = "source_name"
#: A group the user belongs to through an attribute of the user rather than the group's member list (AD's primary
#: group, `primaryGroupID`): a membership edge kept with the user, replaced whenever the user is.
PRIMARY_GROUP_REF: Final = "primary_group_ref"
#: `"true"` for a group read only for what it contributes — nested members, primary-group members — but not handed
#: on as a roster group (AD's built-in groups unless they are asked for).
HIDDEN: Final = "hidden"
_SNAPSHOT_USER_COLUMNS: Final = (REF, *USER_COLUMNS[:-1], MANAGER_REF, NAME, PRIMARY_GROUP_REF)
_SNAPSHOT_GROUP_COLUMNS: Final = (REF, *GROUP_COLUMNS, NAME, HIDDEN)
_EDGE_COLUMNS: Final = ("group_ref", "member_ref")
_SNAPSHOT_FORMAT: Final = 2  # 2: source_name, primary_group_ref, hidden; LDAP references by entryUUID / objectGUID


class StaleWatermarkError(Exception):
    """Raised by a connector's `_read_changes` when the IdP no longer accepts the watermark (an expired delta
    token, a cursor of another format): the read becomes a full one instead of failing."""


@runtime_checkable
class WatermarkStore(Protocol):
    """Where incremental sources keep their opaque watermarks (the state store implements exactly this)."""

    def get_value(self, namespace: str, key: str) -> str | None: ...

    def set_value(self, namespace: str, key: str, value: str) -> None: ...


class MemoryWatermarkStore:
    """A `WatermarkStore` in a dict: for tests, and for one process that reads several times."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get_value(self, namespace: str, key: str) -> str | None:
        return self.values.get((namespace, key))

    def set_value(self, namespace: str, key: str, value: str) -> None:
        self.values[(namespace, key)] = value


@dataclass(frozen=True)
class SourceReport:
    """What one read did, for the extraction assets' metadata (never holds a secret).

    Attributes:
        source: the source kind (`ldap`, `entra`, …) and `server`, where it read (a URL without credentials).
        mode: `full` or `incremental`; `reason` says why a full read was made.
        rows: rows handed on per table (the complete roster, also after an incremental read).
        entries_fetched: entries or objects the server returned in this read (what an incremental read saves).
        entries_listed: entries listed by identity only, to find deletions (LDAP's deletion check).
        requests: requests sent (searches, pages, HTTP calls including retries); `pages` pages of results among them.
        throttled: answers that asked us to wait (429, an exhausted rate limit) and `waited_s` the time spent waiting.
    """

    source: str
    server: str
    mode: Literal["full", "incremental"]
    reason: str
    rows: dict[str, int]
    entries_fetched: int
    requests: int
    pages: int
    watermark_before: str | None
    watermark_after: str | None
    wall_time_s: float
    throttled: int = 0
    waited_s: float = 0.0
    entries_listed: int = 0

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata (`MetadataValue`s are built by the asset layer)."""
        return {
            "source": self.source,
            "source_server": self.server,
            "read_mode": self.mode,
            "read_reason": self.reason,
            **{f"{table}_read": count for table, count in self.rows.items()},
            "entries_fetched": self.entries_fetched,
            "entries_listed": self.entries_listed,
            "requests": self.requests,
            "pages": self.pages,
            "throttled": self.throttled,
            "waited_s": round(self.waited_s, 3),
            "watermark_before": self.watermark_before or "",
            "watermark_after": self.watermark_after or "",
            "wall_time_s": round(self.wall_time_s, 3),
        }


@runtime_checkable
class ReportingSource(Protocol):
    """A roster source that also says what it read."""

    last_report: SourceReport | None

    def read(self) -> RawRoster: ...

    def read_with_report(self) -> tuple[RawRoster, SourceReport]: ...


class FullReadPolicy(BaseModel):
    """When an incremental source reads everything again (what an incremental read cannot see is repaired then)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    every_cycles: int = Field(
        24,
        ge=1,
        description="Read everything again after this many reads (1 = always full; deletions an incremental read "
        "does not report are found then).",
    )
    max_age_hours: float = Field(
        24.0, gt=0, description="Read everything again when the last full read is older than this many hours."
    )


@dataclass
class Counters:
    """Counted while reading; becomes part of the `SourceReport`."""

    entries: int = 0
    listed: int = 0
    requests: int = 0
    pages: int = 0
    throttled: int = 0
    waited_s: float = 0.0


def _text(values: Iterable[Any], columns: Iterable[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(values), columns=list(columns))
    return frame.astype(TEXT) if len(frame.columns) else frame


@dataclass(frozen=True)
class Snapshot:
    """A directory as read: users and groups keyed by `source_ref`, and direct membership edges (`group_ref` →
    `member_ref`, where a member may be a user or a group; a user's `primary_group_ref` is one more edge). Built with
    `Snapshot.build` from dicts."""

    users: pd.DataFrame
    groups: pd.DataFrame
    edges: pd.DataFrame

    @staticmethod
    def build(
        users: Iterable[Mapping[str, str | None]],
        groups: Iterable[Mapping[str, str | None]] = (),
        edges: Iterable[tuple[str, str]] = (),
    ) -> Snapshot:
        """From records holding `source_ref`, the roster columns, (users) `manager_ref` and `primary_group_ref`,
        (groups) `hidden`, and optionally `source_name`; missing keys are empty."""
        return Snapshot(
            users=_text(users, _SNAPSHOT_USER_COLUMNS),
            groups=_text(groups, _SNAPSHOT_GROUP_COLUMNS),
            edges=_text(edges, _EDGE_COLUMNS),
        )


@dataclass(frozen=True)
class Delta:
    """What changed since a watermark.

    `users` / `groups` replace the cached entries with the same `source_ref` (or are added). For every group in
    `edges_replaced_for` the cached edges are replaced by that group's edges in `edges`; `edges_added` /
    `edges_removed` are edge-by-edge changes (Microsoft Graph's `members@delta`); `member_edges_replaced_for`
    replaces the edges of those members instead (the users' `memberOf`). `removed_refs` are entries the IdP
    reported deleted (their edges go with them).
    """

    users: Iterable[Mapping[str, str | None]] = ()
    groups: Iterable[Mapping[str, str | None]] = ()
    edges: Iterable[tuple[str, str]] = ()
    edges_replaced_for: Iterable[str] = ()
    member_edges_replaced_for: Iterable[str] = ()
    edges_added: Iterable[tuple[str, str]] = ()
    edges_removed: Iterable[tuple[str, str]] = ()
    removed_refs: Iterable[str] = ()
    #: Entries hold only what changed: a `<NA>` keeps the cached value (`""` clears it).
    partial: bool = False

    def merged_into(self, cached: Snapshot) -> Snapshot:
        changed = Snapshot.build(self.users, self.groups, self.edges)
        removed = set(self.removed_refs)
        users = _replace_rows(cached.users, changed.users, removed, partial=self.partial)
        groups = _replace_rows(cached.groups, changed.groups, removed, partial=self.partial)
        replaced_for = set(self.edges_replaced_for) | removed
        edges = cached.edges
        drop = edges["group_ref"].isin(replaced_for) | edges["member_ref"].isin(
            removed | set(self.member_edges_replaced_for)
        )
        removed_pairs = set(self.edges_removed)
        if removed_pairs:
            pairs = list(zip(edges["group_ref"], edges["member_ref"], strict=True))
            drop |= pd.Series([pair in removed_pairs for pair in pairs], index=edges.index)
        added = _text(self.edges_added, _EDGE_COLUMNS)
        edges = pd.concat([edges[~drop], changed.edges, added], ignore_index=True).drop_duplicates(ignore_index=True)
        return Snapshot(users=users, groups=groups, edges=edges)


def _replace_rows(cached: pd.DataFrame, changed: pd.DataFrame, removed: set[str], *, partial: bool) -> pd.DataFrame:
    if partial and len(changed):
        changed = changed.drop_duplicates(subset=REF, keep="last").set_index(REF)
        before = cached.drop_duplicates(subset=REF, keep="last").set_index(REF)
        known = changed.index.intersection(before.index)
        changed.loc[known] = changed.loc[known].fillna(before.loc[known])
        changed = changed.reset_index()[list(cached.columns)]
    # An entry renamed (a new DN) keeps its external id: the old row goes, or the roster would hold it twice.
    new_ids = changed["external_id"].dropna()
    renamed = cached["external_id"].fillna("").ne("") & cached["external_id"].isin(new_ids[new_ids != ""])
    keep = ~(cached[REF].isin(changed[REF]) | cached[REF].isin(removed) | renamed)
    merged = pd.concat([cached[keep], changed], ignore_index=True)
    return merged.drop_duplicates(subset=REF, keep="last", ignore_index=True)


def _flatten(
    edges: Iterable[tuple[str, str]], group_refs: set[str], user_refs: set[str], roster_groups: set[str]
) -> list[tuple[str, str]]:
    """Every (group, user) pair of the `roster_groups` with the user a member directly or through nested groups
    (any of `group_refs`, hidden ones included); a loop ends the walk."""
    children: dict[str, list[str]] = {}
    for group, member in edges:
        children.setdefault(group, []).append(member)
    pairs: list[tuple[str, str]] = []
    for group in sorted(roster_groups):
        seen_groups = {group}
        found: set[str] = set()
        stack = [group]
        while stack:
            for member in children.get(stack.pop(), ()):
                if member in user_refs:
                    found.add(member)
                elif member in group_refs and member not in seen_groups:
                    seen_groups.add(member)
                    stack.append(member)
        pairs.extend((group, user) for user in sorted(found))
    return pairs


def roster_from_snapshot(snapshot: Snapshot, label: str) -> RawRoster:
    """The snapshot as the roster every source produces: default columns, managers as user names, memberships
    flattened through nested groups (hidden groups pass their members on but are not roster groups). Rows are
    numbered from 1 in `source_ref` order; `source_ref` stays a column so a rejected row can be traced to its entry
    (an object id)."""
    users = snapshot.users.sort_values(REF, ignore_index=True)
    names_by_ref = dict(zip(users[REF], users["user_name"], strict=True))
    manager = users[MANAGER_REF].map(names_by_ref).astype(TEXT)  # a manager outside the roster: no value
    primary = users.loc[users[PRIMARY_GROUP_REF].fillna("") != "", [PRIMARY_GROUP_REF, REF]]
    edges = [
        *zip(snapshot.edges["group_ref"], snapshot.edges["member_ref"], strict=True),
        *zip(primary[PRIMARY_GROUP_REF], primary[REF], strict=True),
    ]
    users = users.drop(columns=[MANAGER_REF]).assign(manager=manager)
    users = users[[*USER_COLUMNS, REF]]
    every_group = snapshot.groups.sort_values(REF, ignore_index=True)
    groups = every_group[every_group[HIDDEN].fillna("") != "true"].reset_index(drop=True)
    group_names = dict(zip(groups[REF], groups["group_name"], strict=True))
    pairs = _flatten(edges, set(every_group[REF]), set(users[REF]), set(groups[REF]))
    memberships = _text(
        ((group_names[group], names_by_ref[user], group, user) for group, user in pairs),
        ("group_name", "user_name", "group_ref", "user_ref"),
    )
    return RawRoster(
        users=RawTable("users", f"{label} users", _numbered(users)),
        groups=RawTable("groups", f"{label} groups", _numbered(groups[[*GROUP_COLUMNS, REF]])),
        memberships=RawTable("memberships", f"{label} memberships", _numbered(memberships)),
    )


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype(TEXT) if len(frame.columns) else frame
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


class SnapshotCache:
    """The last complete snapshot as Parquet files in `folder/name/`, tagged with a generation id.

    The watermark records the generation it belongs to: a cache that is missing, damaged or from another
    generation (a crash between writing the cache and the watermark) forces a full read instead of a wrong merge.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = Path(folder) / name

    def load(self, generation: str) -> Snapshot | None:
        try:
            meta = json.loads((self.folder / "snapshot.json").read_text("utf-8"))
            if meta.get("generation") != generation or meta.get("format") != _SNAPSHOT_FORMAT:
                return None
            tables = {
                table: pq.read_table(self.folder / f"{table}.parquet").to_pandas().astype(TEXT)
                for table in ("users", "groups", "edges")
            }
        except (OSError, ValueError, pa.ArrowException):
            return None
        return Snapshot(**tables)

    def save(self, snapshot: Snapshot) -> str:
        """Write the snapshot (each file replaced atomically); returns its new generation id."""
        self.folder.mkdir(parents=True, exist_ok=True)
        generation = uuid.uuid4().hex
        for table in ("users", "groups", "edges"):
            frame: pd.DataFrame = getattr(snapshot, table)
            temporary = self.folder / f".{table}.parquet.tmp"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary)
            os.replace(temporary, self.folder / f"{table}.parquet")
        temporary = self.folder / ".snapshot.json.tmp"
        temporary.write_text(json.dumps({"generation": generation, "format": _SNAPSHOT_FORMAT}), "utf-8")
        os.replace(temporary, self.folder / "snapshot.json")
        return generation


@dataclass
class _Cursor:
    """What is kept in the watermark store (one JSON value): the IdP's watermark and the full-read bookkeeping."""

    watermark: str
    generation: str
    full_read_at: float
    reads_since_full: int = 0

    @staticmethod
    def parse(value: str | None) -> _Cursor | None:
        if not value:
            return None
        try:
            data = json.loads(value)
            return _Cursor(
                watermark=str(data["watermark"]),
                generation=str(data["generation"]),
                full_read_at=float(data["full_read_at"]),
                reads_since_full=int(data.get("reads_since_full", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps(self.__dict__)


@dataclass(kw_only=True)
class SnapshotSource:
    """The read cycle of a connector: full or incremental, cache and watermark, report.

    Subclasses implement `_read_full(counters) -> (Snapshot, watermark | None)` and, when they can read
    incrementally, `_read_changes(watermark, counters) -> (Delta, watermark)` — or `_read_changes_from(watermark,
    counters, cached)` when the changes only make sense against the cached snapshot (references by name, deletions
    found by comparing a listing with it). Without a watermark store or a cache folder every read is full.
    """

    kind: ClassVar[str] = "source"
    cache_dir: Path | None = None
    watermarks: WatermarkStore | None = None
    clock: Callable[[], float] = time.time
    last_report: SourceReport | None = field(init=False, default=None, repr=False)

    @property
    def server(self) -> str:
        """Where the source reads, for messages and metadata (never with credentials)."""
        raise NotImplementedError

    @property
    def full_read(self) -> FullReadPolicy:
        """When to read everything again (from the source's settings)."""
        return FullReadPolicy()

    @property
    def namespace(self) -> str:
        """The watermark namespace: one per source kind and server, so two directories never share a cursor."""
        return f"source:{self.kind}:{self.server}"

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        raise NotImplementedError

    def _read_changes(self, watermark: str, counters: Counters) -> tuple[Delta, str]:
        raise NotImplementedError

    def _read_changes_from(self, watermark: str, counters: Counters, cached: Snapshot) -> tuple[Delta, str]:
        return self._read_changes(watermark, counters)

    @property
    def incremental(self) -> bool:
        cls = type(self)
        return (
            cls._read_changes is not SnapshotSource._read_changes
            or cls._read_changes_from is not SnapshotSource._read_changes_from
        )

    def read(self) -> RawRoster:
        """Read the complete roster (incrementally when possible). Raises `RosterError`."""
        return self.read_with_report()[0]

    def read_with_report(self) -> tuple[RawRoster, SourceReport]:
        started = time.perf_counter()
        counters = Counters()
        cache = SnapshotCache(self.cache_dir, _safe_name(self.namespace)) if self.cache_dir is not None else None
        stored = self.watermarks.get_value(self.namespace, "cursor") if self.watermarks is not None else None
        cursor = _Cursor.parse(stored)
        full_reason, cached = self._full_read_reason(cursor, cache)
        changes: tuple[Delta, str] | None = None
        if cursor is not None and cached is not None:
            try:
                changes = self._read_changes_from(cursor.watermark, counters, cached)
            except StaleWatermarkError as stale:
                full_reason = f"the watermark is no longer accepted ({stale})"
        if changes is not None and cursor is not None and cached is not None:
            delta, watermark = changes
            snapshot = delta.merged_into(cached)
            mode: Literal["full", "incremental"] = "incremental"
            reason = f"incremental read {cursor.reads_since_full + 1} since the last full read"
            full_read_at, reads_since_full = cursor.full_read_at, cursor.reads_since_full + 1
        else:
            snapshot, maybe_watermark = self._read_full(counters)
            watermark = maybe_watermark or ""
            mode = "full"
            reason = full_reason or "a full read"
            full_read_at, reads_since_full = self.clock(), 0
        roster = roster_from_snapshot(snapshot, f"{self.kind} {self.server}")
        if cache is not None and self.watermarks is not None and watermark:
            generation = cache.save(snapshot)  # the cache first: a watermark must never point past its cache
            after = _Cursor(watermark, generation, full_read_at, reads_since_full)
            self.watermarks.set_value(self.namespace, "cursor", after.dump())
        report = SourceReport(
            source=self.kind,
            server=self.server,
            mode=mode,
            reason=reason,
            rows={
                "users": len(roster.users.frame),
                "groups": len(roster.groups.frame) if roster.groups is not None else 0,
                "memberships": len(roster.memberships.frame) if roster.memberships is not None else 0,
            },
            entries_fetched=counters.entries,
            entries_listed=counters.listed,
            requests=counters.requests,
            pages=counters.pages,
            watermark_before=cursor.watermark if cursor is not None else None,
            watermark_after=watermark or None,
            wall_time_s=time.perf_counter() - started,
            throttled=counters.throttled,
            waited_s=counters.waited_s,
        )
        self.last_report = report
        return roster, report

    def _full_read_reason(
        self, cursor: _Cursor | None, cache: SnapshotCache | None
    ) -> tuple[str | None, Snapshot | None]:
        if not self.incremental:
            return f"the {self.kind} source always reads everything", None
        if cache is None or self.watermarks is None:
            return "no cache folder or watermark store: every read is full", None
        if cursor is None:
            return "no watermark yet", None
        if cursor.reads_since_full + 1 >= self.full_read.every_cycles:
            return f"a full read every {self.full_read.every_cycles} reads (deletions are found then)", None
        age_h = (self.clock() - cursor.full_read_at) / 3600
        if age_h >= self.full_read.max_age_hours:
            return f"the last full read is {age_h:.1f} h old (limit {self.full_read.max_age_hours:g} h)", None
        cached = cache.load(cursor.generation)
        if cached is None:
            return "the cached roster is missing or does not match the watermark", None
        return None, cached


def _safe_name(namespace: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in namespace)[:200]
