"""The emulated tenant's resources in SQLite: one file shared by processes, or memory for tests.

Each resource is one row holding its JSON body plus the few columns that uniqueness, filters and the
delete cascade need; group memberships are rows of their own. Every write is one ``BEGIN IMMEDIATE``
transaction, so several processes (each Dagster run starts its own emulator on the same file) stay
consistent, and ``busy_timeout`` makes them wait for each other instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._errors import ScimError, invalid_value, not_found, uniqueness
from ._filters import Condition
from ._patch import MemberEditor, apply_patch, canonicalize, read_members
from ._profile import RULES, ResourceRules

DEFAULT_BASE_URL = "/scim/v2"
_SQL_VARIABLES_PER_QUERY = 500

_SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE IF NOT EXISTS resources (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    unique_key TEXT,
    display TEXT,
    key_a TEXT,
    key_b TEXT,
    container_ref TEXT,
    user_ref TEXT,
    group_ref TEXT,
    body TEXT NOT NULL,
    created TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    display TEXT,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS type_stats (
    type TEXT PRIMARY KEY,
    total INTEGER NOT NULL,
    deletions INTEGER NOT NULL
)
"""

# Composite indexes lead with the type, so the planner never prefers scanning a whole type.
_INDEXES = """
DROP INDEX IF EXISTS resources_container_ref;
DROP INDEX IF EXISTS resources_user_ref;
DROP INDEX IF EXISTS resources_group_ref;
DROP INDEX IF EXISTS resources_unique;
CREATE UNIQUE INDEX IF NOT EXISTS resources_unique_key ON resources (type, unique_key);
CREATE INDEX IF NOT EXISTS resources_type ON resources (type);
CREATE INDEX IF NOT EXISTS resources_key_a ON resources (type, key_a);
CREATE INDEX IF NOT EXISTS resources_key_b ON resources (type, key_b);
CREATE INDEX IF NOT EXISTS resources_container ON resources (type, container_ref);
CREATE INDEX IF NOT EXISTS resources_user ON resources (type, user_ref);
CREATE INDEX IF NOT EXISTS resources_group ON resources (type, group_ref);
CREATE INDEX IF NOT EXISTS memberships_user ON memberships (user_id)
"""

_ADDED_COLUMNS = {"resources": ("key_a", "key_b"), "memberships": ("display",)}

_COLUMNS = "id, type, display, body, created, last_modified, version"
_REFERENCE_COLUMNS = {"container.value": "container_ref", "user.value": "user_ref", "group.value": "group_ref"}
_KEY_COLUMNS = {
    ("Users", "username"): "key_b",  # not unique_key: a store that allows duplicate names leaves that unset
    ("Users", "displayname"): "key_a",
    ("Groups", "displayname"): "key_b",
    ("Groups", "username"): "key_a",  # never set: groups have no userName, so nothing matches
    ("Containers", "name"): "key_a",
    ("Containers", "displayname"): "key_b",
    ("ContainerPermissions", "user.display"): "key_a",
    ("ContainerPermissions", "group.display"): "key_b",
    ("PrivilegedData", "user.display"): "key_a",
    ("PrivilegedData", "group.display"): "key_b",
}
"""The column holding the casefolded value of each case-insensitive filter attribute."""


def _fold(value: object) -> str | None:
    return value.casefold() if isinstance(value, str) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _SQL_VARIABLES_PER_QUERY):
        yield items[start : start + _SQL_VARIABLES_PER_QUERY]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated body and the columns derived from it."""

    body: dict[str, Any]
    unique_key: str | None
    display: str | None
    key_a: str | None
    key_b: str | None
    container_ref: str | None
    user_ref: str | None
    group_ref: str | None
    members: dict[str, str | None] | None

    def indexed_columns(self) -> tuple[str | None, ...]:
        """unique_key, display, key_a, key_b, container_ref, user_ref, group_ref: the order the SQL names them in."""
        return (
            self.unique_key,
            self.display,
            self.key_a,
            self.key_b,
            self.container_ref,
            self.user_ref,
            self.group_ref,
        )


@dataclass(frozen=True, slots=True)
class SearchResult:
    total: int
    resources: list[dict[str, Any]]


class ResourceStore:
    """Thread-safe access to the tenant's resources.

    Resources go in and come out as SCIM JSON dicts; what comes out carries ``id`` and ``meta``
    (``location`` and member ``$ref`` built on ``base_url``). Rule violations raise ``ScimError``.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        busy_timeout_s: float = 30.0,
        drop_attributes: Sequence[str] = (),
        unique_names: bool = True,
    ) -> None:
        self.db_path = None if db_path is None else Path(db_path)
        self.unique_names = unique_names
        """False: userName and displayName are not unique (a duplicate create succeeds)."""
        self.drop_attributes = tuple(drop_attributes)
        """Attribute paths never stored (a target that keeps no ``title``, no enterprise extension …)."""
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            ":memory:" if self.db_path is None else str(self.db_path),
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        self._conn.create_function("scim_fold", 1, _fold, deterministic=True)
        with self._lock:
            if self.db_path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
                # Survives a crash of the process (the WAL is written at commit), not a power cut:
                # enough for a test server, and it halves the cost of each write.
                self._conn.execute("PRAGMA synchronous=OFF")
        # Where a page of an unfiltered list ends: (type, deletions, next startIndex) -> last seq.
        self._page_ends: dict[tuple[str, int, int], int] = {}
        # Several processes may open a new file at once: set it up in one write transaction.
        with self._write() as conn:
            self._migrate(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or bring a file written by an earlier emulator up to date."""
        if conn.execute("PRAGMA user_version").fetchone()[0] >= _SCHEMA_VERSION:
            return
        for statement in _TABLES.split(";"):
            conn.execute(statement)
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column not in present:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        for statement in _INDEXES.split(";"):
            conn.execute(statement)
        for resource_id, resource_type, body in conn.execute(
            "SELECT id, type, body FROM resources WHERE key_b IS NULL AND (key_a IS NULL OR type = 'Users')"
        ).fetchall():
            key_a, key_b = _keys(resource_type, json.loads(body))
            conn.execute("UPDATE resources SET key_a = ?, key_b = ? WHERE id = ?", (key_a, key_b, resource_id))
        conn.execute("DELETE FROM type_stats")
        conn.execute("INSERT INTO type_stats SELECT type, count(*), 0 FROM resources GROUP BY type")
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # One read transaction, so a count and its page come from the same snapshot.
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # -- public operations --------------------------------------------------------------------

    def create(
        self, resource_type: str, resource: dict[str, Any], *, base_url: str = DEFAULT_BASE_URL
    ) -> dict[str, Any]:
        """Store a new resource under a fresh UUID and return it."""
        rules = RULES[resource_type]
        resource_id = str(uuid.uuid4())
        now = _now()
        with self._write() as conn:
            prepared = self._prepare(conn, rules, resource, active_default=True)
            body_json = json.dumps(prepared.body, separators=(",", ":"))
            try:
                conn.execute(
                    "INSERT INTO resources (id, type, unique_key, display, key_a, key_b, container_ref,"
                    " user_ref, group_ref, body, created, last_modified, version)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (resource_id, resource_type, *prepared.indexed_columns(), body_json, now, now),
                )
            except sqlite3.IntegrityError:
                raise self._duplicate(rules) from None
            conn.execute(
                "INSERT INTO type_stats (type, total, deletions) VALUES (?, 1, 0)"
                " ON CONFLICT (type) DO UPDATE SET total = total + 1",
                (resource_type,),
            )
            if prepared.members:
                _SqlMembers(conn, resource_id).add(prepared.members)
            row = (resource_id, resource_type, prepared.display, body_json, now, now, 1)
            # A new user belongs to no group yet: no need to look its groups up.
            return self._render_rows(conn, resource_type, [row], base_url, resource_type != "Users")[0]

    def get(
        self,
        resource_type: str,
        resource_id: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        with_members: bool = True,
    ) -> dict[str, Any]:
        with self._lock:
            row = self._typed_row(self._conn, resource_type, resource_id)
            return self._render_rows(self._conn, resource_type, [row], base_url, with_members)[0]

    def version(self, resource_type: str, resource_id: str) -> str:
        """The resource's current ``meta.version`` (its ETag)."""
        with self._read() as conn:
            return _etag(self._typed_row(conn, resource_type, resource_id)[6])

    def search(
        self,
        resource_type: str,
        conditions: Sequence[Condition] = (),
        *,
        start_index: int = 1,
        count: int | None = None,
        base_url: str = DEFAULT_BASE_URL,
        with_members: bool = True,
    ) -> SearchResult:
        """Resources matching every condition, in creation order; ``start_index`` is 1-based."""
        start_index = max(start_index, 1)
        limit = -1 if count is None else count
        where = ["type = ?"]
        params: list[Any] = [resource_type]
        for condition in conditions:
            sql, param = _condition_sql(resource_type, condition)
            where.append(sql)
            params.append(param)
        clause = " AND ".join(where)
        with self._read() as conn:
            if conditions:
                total = conn.execute(f"SELECT count(*) FROM resources WHERE {clause}", params).fetchone()[0]
                if count == 0:
                    return SearchResult(total, [])
                # Matching seqs first, from the covering index of the filtered column; then the rows.
                rows = conn.execute(
                    f"SELECT {_COLUMNS}, seq FROM resources WHERE seq IN (SELECT seq FROM resources"
                    f" WHERE {clause} ORDER BY seq LIMIT ? OFFSET ?) ORDER BY seq",
                    [*params, limit, start_index - 1],
                ).fetchall()
            else:
                total, rows = self._unfiltered_page(conn, resource_type, start_index, limit)
            rendered = self._render_rows(conn, resource_type, [row[:-1] for row in rows], base_url, with_members)
            return SearchResult(total, rendered)

    def _unfiltered_page(
        self, conn: sqlite3.Connection, resource_type: str, start_index: int, limit: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """A page of a whole resource type, its total kept in type_stats rather than counted.

        A client reading a type page by page asks next for the startIndex just after the page it
        got: that page starts after the last seq served, found through an index instead of
        skipping ``startIndex`` rows. Any deletion of the type (in any process) voids those marks.
        """
        stats = conn.execute("SELECT total, deletions FROM type_stats WHERE type = ?", (resource_type,)).fetchone()
        total, deletions = (0, 0) if stats is None else stats
        if limit == 0:
            return total, []
        after = 0 if start_index == 1 else self._page_ends.get((resource_type, deletions, start_index))
        if after is not None:
            rows = conn.execute(
                f"SELECT {_COLUMNS}, seq FROM resources WHERE type = ? AND seq > ? ORDER BY seq LIMIT ?",
                (resource_type, after, limit),
            ).fetchall()
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS}, seq FROM resources WHERE type = ? ORDER BY seq LIMIT ? OFFSET ?",
                (resource_type, limit, start_index - 1),
            ).fetchall()
        if rows:
            if len(self._page_ends) > 4096:
                self._page_ends.clear()
            self._page_ends[(resource_type, deletions, start_index + len(rows))] = rows[-1][-1]
        return total, rows

    def replace(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        *,
        if_match: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
    ) -> dict[str, Any]:
        """Replace everything a client may write (PUT); members listed in a group's body replace its members."""
        rules = RULES[resource_type]
        with self._write() as conn:
            row = self._typed_row(conn, resource_type, resource_id)
            _check_version(row[6], if_match)
            prepared = self._prepare(conn, rules, resource, active_default=False)
            row = self._update(conn, rules, row, prepared)
            if resource_type == "Groups":
                members = _SqlMembers(conn, resource_id)
                members.clear()
                if prepared.members:
                    members.add(prepared.members)
            return self._render_rows(conn, resource_type, [row], base_url)[0]

    def patch(
        self,
        resource_type: str,
        resource_id: str,
        operations: list[dict[str, Any]],
        *,
        if_match: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        with_members: bool = True,
    ) -> dict[str, Any]:
        """Apply PATCH operations atomically: all of them or, on the first error, none."""
        rules = RULES[resource_type]
        with self._write() as conn:
            row = self._typed_row(conn, resource_type, resource_id)
            _check_version(row[6], if_match)
            members = _SqlMembers(conn, resource_id) if resource_type == "Groups" else None
            patched = apply_patch(rules, json.loads(row[3]), operations, members)
            if patched != json.loads(row[3]) or (members is not None and members.changed):
                prepared = self._prepare(conn, rules, patched, active_default=None)
                row = self._update(conn, rules, row, prepared)
            return self._render_rows(conn, resource_type, [row], base_url, with_members)[0]

    def delete(self, resource_type: str, resource_id: str, *, if_match: str | None = None) -> None:
        """Remove a resource for good; a user also leaves its groups, permissions and privileged data."""
        with self._write() as conn:
            row = self._typed_row(conn, resource_type, resource_id)
            _check_version(row[6], if_match)
            now = _now()
            if resource_type == "Users":
                conn.execute(
                    "UPDATE resources SET version = version + 1, last_modified = ? WHERE id IN"
                    " (SELECT group_id FROM memberships WHERE user_id = ?)",
                    (now, resource_id),
                )
                conn.execute("DELETE FROM memberships WHERE user_id = ?", (resource_id,))
                permissions = conn.execute(
                    "DELETE FROM resources WHERE type = 'ContainerPermissions' AND user_ref = ?",
                    (resource_id,),
                ).rowcount
                if permissions > 0:
                    _count_deletions(conn, "ContainerPermissions", permissions)
                conn.execute(
                    "UPDATE resources SET body = json_remove(body, '$.user'), user_ref = NULL,"
                    " version = version + 1, last_modified = ?"
                    " WHERE type = 'PrivilegedData' AND user_ref = ?",
                    (now, resource_id),
                )
            conn.execute("DELETE FROM resources WHERE id = ?", (resource_id,))
            _count_deletions(conn, resource_type, 1)

    def insert(
        self, resource_type: str, resource: dict[str, Any], *, base_url: str = DEFAULT_BASE_URL
    ) -> dict[str, Any]:
        """Create a resource whatever the API allows: seeds data Delinea creates itself (PrivilegedData)."""
        return self.create(resource_type, resource, base_url=base_url)

    def count(self, resource_type: str) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM resources WHERE type = ?", (resource_type,)).fetchone()[0])

    def member_ids(self, group_id: str) -> list[str]:
        """The ids of a group's members, in the order they were created."""
        with self._read() as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT m.user_id FROM memberships m JOIN resources r ON r.id = m.user_id"
                    " WHERE m.group_id = ? ORDER BY r.seq",
                    (group_id,),
                )
            ]

    def dump(self, *, base_url: str = DEFAULT_BASE_URL) -> dict[str, list[dict[str, Any]]]:
        """Every resource, by resource type."""
        return {resource_type: self.search(resource_type, base_url=base_url).resources for resource_type in RULES}

    # -- tokens (only their SHA-256 is stored) ---------------------------------------------------

    def save_token(self, token_hash: str, client_id: str, expires_at: float) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM tokens WHERE expires_at < ?", (expires_at - 86_400 * 7,))
            conn.execute(
                "INSERT OR REPLACE INTO tokens (token_hash, client_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, client_id, expires_at),
            )

    def token_expiry(self, token_hash: str) -> float | None:
        with self._lock:
            row = self._conn.execute("SELECT expires_at FROM tokens WHERE token_hash = ?", (token_hash,)).fetchone()
        return None if row is None else float(row[0])

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _typed_row(conn: sqlite3.Connection, resource_type: str, resource_id: str) -> tuple[Any, ...]:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {_COLUMNS} FROM resources WHERE id = ? AND +type = ?", (resource_id, resource_type)
        ).fetchone()
        if row is None:
            raise not_found(resource_type, resource_id)
        return row

    @staticmethod
    def _duplicate(rules: ResourceRules) -> ScimError:
        what = {
            "Users": "a user with this userName",
            "Groups": "a group with this displayName",
            "Containers": "a container with this name in the same parent",
            "ContainerPermissions": "this permission",
        }.get(rules.endpoint, "this resource")
        return uniqueness(f"{what} already exists")

    def _update(
        self,
        conn: sqlite3.Connection,
        rules: ResourceRules,
        row: tuple[Any, ...],
        prepared: _Prepared,
    ) -> tuple[Any, ...]:
        """Write a prepared body over ``row``; returns the row as it now stands."""
        resource_id, now = row[0], _now()
        body_json = json.dumps(prepared.body, separators=(",", ":"))
        try:
            conn.execute(
                "UPDATE resources SET unique_key = ?, display = ?, key_a = ?, key_b = ?,"
                " container_ref = ?, user_ref = ?, group_ref = ?, body = ?, last_modified = ?,"
                " version = version + 1 WHERE id = ?",
                (*prepared.indexed_columns(), body_json, now, resource_id),
            )
        except sqlite3.IntegrityError:
            raise self._duplicate(rules) from None
        return (resource_id, row[1], prepared.display, body_json, row[4], now, row[6] + 1)

    def _prepare(
        self,
        conn: sqlite3.Connection,
        rules: ResourceRules,
        resource: dict[str, Any],
        *,
        active_default: bool | None,
    ) -> _Prepared:
        """Validate a body and derive its columns.

        ``active_default`` is what a user without ``active`` gets: true on create, false on PUT
        (Delinea: a PUT without active=true suspends the user, as Okta wizard apps learn), and
        nothing on PATCH, where removing ``active`` leaves it unset.
        """
        if not isinstance(resource, dict):
            raise invalid_value(f"a {rules.endpoint} resource must be a JSON object")
        body: dict[str, Any] = canonicalize(resource)
        for read_only in ("id", "meta", "groups", "password"):
            body.pop(read_only, None)
        members = body.pop("members", None)
        for path in self.drop_attributes:
            _drop_attribute(body, path)
        body["schemas"] = [rules.schema] + [key for key in body if key.lower().startswith("urn:") and key != "schemas"]
        display: str | None = None
        unique_key: str | None = None
        refs: dict[str, str | None] = {"container": None, "user": None, "group": None}
        member_list: dict[str, str | None] | None = None
        if rules.endpoint == "Users":
            user_name = _required_string(body, "userName", rules)
            if "active" in body:
                body["active"] = _boolean(body["active"], "active")
            elif active_default is not None:
                body["active"] = active_default
            unique_key = user_name.casefold() if self.unique_names else None
            display = body.get("displayName") if isinstance(body.get("displayName"), str) else user_name
        elif rules.endpoint == "Groups":
            display = _required_string(body, "displayName", rules)
            unique_key = display.casefold() if self.unique_names else None
            if members is not None:
                if not isinstance(members, list):
                    raise invalid_value("members must be a list")
                member_list = read_members(members)
        elif rules.endpoint == "Containers":
            name = _required_string(body, "name", rules)
            display = body.get("displayName") if isinstance(body.get("displayName"), str) else name
            parent = body.get("parent")
            parent_id = parent.get("value") if isinstance(parent, dict) else None
            if parent_id is not None:
                _require_reference(conn, "Containers", parent_id, "parent")
            unique_key = f"{parent_id or ''}\x1f{name.casefold()}"
        elif rules.endpoint == "ContainerPermissions":
            refs = self._references(conn, body, required_container=True)
            if (refs["user"] is None) == (refs["group"] is None):
                raise invalid_value("a container permission names exactly one of user or group")
            principal = f"u:{refs['user']}" if refs["user"] else f"g:{refs['group']}"
            unique_key = f"{refs['container']}\x1f{principal}"
        else:  # PrivilegedData
            refs = self._references(conn, body, required_container=False)
            data_name = body.get("name")
            display = data_name if isinstance(data_name, str) else None
        key_a, key_b = _keys(rules.endpoint, body)
        return _Prepared(
            body=body,
            unique_key=unique_key,
            display=display,
            key_a=key_a,
            key_b=key_b,
            container_ref=refs["container"],
            user_ref=refs["user"],
            group_ref=refs["group"],
            members=member_list,
        )

    @staticmethod
    def _references(
        conn: sqlite3.Connection, body: dict[str, Any], *, required_container: bool
    ) -> dict[str, str | None]:
        """Check the container/user/group references of a body and fill in their ``display``."""
        refs: dict[str, str | None] = {}
        for attribute, target_type in (("container", "Containers"), ("user", "Users"), ("group", "Groups")):
            reference = body.get(attribute)
            if reference is None:
                if attribute == "container" and required_container:
                    raise invalid_value("container.value is required")
                refs[attribute] = None
                continue
            target_id = reference.get("value") if isinstance(reference, dict) else None
            if not isinstance(target_id, str):
                raise invalid_value(f"{attribute}.value must be a string id")
            display = _require_reference(conn, target_type, target_id, attribute)
            body[attribute] = {"value": target_id, "display": display}
            refs[attribute] = target_id
        return refs

    def _render_rows(
        self,
        conn: sqlite3.Connection,
        resource_type: str,
        rows: Sequence[tuple[Any, ...]],
        base_url: str,
        with_members: bool = True,
    ) -> list[dict[str, Any]]:
        """Resources from their rows; ``with_members`` adds the memberships (a group's members, a
        user's groups), read in one query per 500 resources."""
        ids = [row[0] for row in rows]
        members: dict[str, list[dict[str, Any]]] = {}
        groups: dict[str, list[dict[str, Any]]] = {}
        if with_members and resource_type == "Groups":
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for group_id, user_id, display in conn.execute(
                    "SELECT m.group_id, m.user_id, m.display FROM memberships m"
                    f" JOIN resources r ON r.id = m.user_id WHERE m.group_id IN ({marks})"
                    " ORDER BY r.seq",
                    chunk,
                ):
                    member = {"value": user_id, "type": "User", "$ref": f"{base_url}/Users/{user_id}"}
                    if display is not None:
                        member["display"] = display
                    members.setdefault(group_id, []).append(member)
        elif with_members and resource_type == "Users":
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for user_id, group_id, display in conn.execute(
                    "SELECT m.user_id, m.group_id, g.display FROM memberships m"
                    f" JOIN resources g ON g.id = m.group_id WHERE m.user_id IN ({marks})"
                    " ORDER BY g.seq",
                    chunk,
                ):
                    groups.setdefault(user_id, []).append(
                        {
                            "value": group_id,
                            "display": display,
                            "type": "direct",
                            "$ref": f"{base_url}/Groups/{group_id}",
                        }
                    )
        rendered = []
        for resource_id, _type, _display, body_json, created, last_modified, version in rows:
            body = json.loads(body_json)
            resource: dict[str, Any] = {"schemas": body.pop("schemas"), "id": resource_id, **body}
            for attribute in ("container", "user", "group"):
                reference = resource.get(attribute)
                if isinstance(reference, dict) and "value" in reference:
                    endpoint = {"container": "Containers", "user": "Users", "group": "Groups"}[attribute]
                    reference["$ref"] = f"{base_url}/{endpoint}/{reference['value']}"
            if resource_type == "Groups" and with_members:
                resource["members"] = members.get(resource_id, [])
            if resource_id in groups:
                resource["groups"] = groups[resource_id]
            resource["meta"] = {
                "resourceType": _singular(resource_type),
                "created": created,
                "lastModified": last_modified,
                "version": _etag(version),
                "location": f"{base_url}/{resource_type}/{resource_id}",
            }
            rendered.append(resource)
        return rendered


class _SqlMembers(MemberEditor):
    """Member edits of one group, inside the caller's write transaction."""

    def __init__(self, conn: sqlite3.Connection, group_id: str) -> None:
        self._conn = conn
        self._group_id = group_id
        self.changed = False

    def add(self, members: dict[str, str | None]) -> None:
        unique_ids = list(members)
        found: set[str] = set()
        for chunk in _chunks(unique_ids):
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self._conn.execute(
                    f"SELECT id FROM resources WHERE id IN ({marks}) AND +type = 'Users'", chunk
                )
            )
        missing = [user_id for user_id in unique_ids if user_id not in found]
        if missing:
            raise invalid_value(f"{len(missing)} member value(s) name no existing user")
        cursor = self._conn.executemany(
            "INSERT OR IGNORE INTO memberships (group_id, user_id, display) VALUES (?, ?, ?)",
            [(self._group_id, user_id, display) for user_id, display in members.items()],
        )
        self.changed = self.changed or cursor.rowcount > 0

    def remove(self, user_ids: list[str]) -> int:
        cursor = self._conn.executemany(
            "DELETE FROM memberships WHERE group_id = ? AND user_id = ?",
            [(self._group_id, user_id) for user_id in dict.fromkeys(user_ids)],
        )
        self.changed = self.changed or cursor.rowcount > 0
        return max(cursor.rowcount, 0)

    def clear(self) -> int:
        cursor = self._conn.execute("DELETE FROM memberships WHERE group_id = ?", (self._group_id,))
        self.changed = self.changed or cursor.rowcount > 0
        return max(cursor.rowcount, 0)


def _drop_attribute(body: dict[str, Any], path: str) -> None:
    """Remove ``path`` (``title``, ``name.givenName``, ``urn:…:User:department`` or a whole extension URN)."""
    container: dict[str, Any] | None = body
    rest = path
    extension_key = next((key for key in body if key.lower() == path.lower()), None)
    if extension_key is not None and extension_key.lower().startswith("urn:"):
        del body[extension_key]
        return
    if path.lower().startswith("urn:"):
        urn, _, rest = path.rpartition(":")
        key = next((k for k in body if k.lower() == urn.lower()), None)
        container = body.get(key) if key is not None else None
    if not isinstance(container, dict):
        return
    attribute, _, sub = rest.partition(".")
    key = next((k for k in container if k.lower() == attribute.lower()), None)
    if key is None:
        return
    if not sub:
        del container[key]
    elif isinstance(container[key], dict):
        container[key] = {k: v for k, v in container[key].items() if k.lower() != sub.lower()}
        if not container[key]:
            del container[key]
    if container is not body and not container:
        body.pop(next(k for k in body if body[k] is container), None)


def _singular(resource_type: str) -> str:
    return {
        "Users": "User",
        "Groups": "Group",
        "Containers": "Container",
        "ContainerPermissions": "ContainerPermission",
        "PrivilegedData": "PrivilegedData",
    }[resource_type]


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _check_version(version: int, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    accepted = {tag.strip() for tag in if_match.split(",")}
    if _etag(version) not in accepted and f'"{version}"' not in accepted:
        raise ScimError(412, "the resource changed since the version given in If-Match")


def _required_string(body: dict[str, Any], attribute: str, rules: ResourceRules) -> str:
    value = body.get(attribute)
    if not isinstance(value, str) or not value.strip():
        raise invalid_value(f"{rules.endpoint} need a non-empty {attribute}")
    return value


def _boolean(value: Any, attribute: str) -> bool:
    if isinstance(value, bool):
        return value
    # Entra ID sends "True"/"False" strings for active; accept them as real servers do.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid_value(f"{attribute} must be a boolean")


def _require_reference(conn: sqlite3.Connection, target_type: str, target_id: str, attribute: str) -> str | None:
    row = conn.execute("SELECT display FROM resources WHERE id = ? AND type = ?", (target_id, target_type)).fetchone()
    if row is None:
        raise invalid_value(f"{attribute}.value names no existing {target_type[:-1].lower()}")
    return row[0]  # type: ignore[no-any-return]


def _condition_sql(resource_type: str, condition: Condition) -> tuple[str, str]:
    """A SQL term and its parameter for an accepted filter condition."""
    attribute, op = condition.attribute, condition.op
    key_column = _KEY_COLUMNS.get((resource_type, attribute))
    if key_column is not None:
        column, value = key_column, condition.value.casefold()
    elif attribute in _REFERENCE_COLUMNS:
        column, value = _REFERENCE_COLUMNS[attribute], condition.value
    elif attribute == "privilegeddata.value":
        column, value = "json_extract(body, '$.privilegedData.value')", condition.value
    else:  # the matrix and this table disagree: a bug, not a client error
        raise AssertionError(f"no column for {resource_type} {attribute}")
    if op == "eq":
        return f"{column} = ?", value
    return f"instr({column}, ?) > 0", value


def _keys(resource_type: str, body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The casefolded values behind ``key_a`` and ``key_b`` (see ``_KEY_COLUMNS``)."""

    def folded(*path: str) -> str | None:
        value: Any = body
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return _fold(value)

    if resource_type == "Users":
        return folded("displayName"), folded("userName")
    if resource_type == "Groups":
        return None, folded("displayName")
    if resource_type == "Containers":
        return folded("name"), folded("displayName")
    if resource_type in ("ContainerPermissions", "PrivilegedData"):
        return folded("user", "display"), folded("group", "display")
    return None, None


def _count_deletions(conn: sqlite3.Connection, resource_type: str, count: int) -> None:
    conn.execute(
        "UPDATE type_stats SET total = total - ?, deletions = deletions + ? WHERE type = ?",
        (count, count, resource_type),
    )
