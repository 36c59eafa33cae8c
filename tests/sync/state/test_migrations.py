"""The state store's Alembic migrations: an existing pre-Alembic SQLite state is upgraded in place with its rows,
the migrated schema is exactly the tables the code uses, and openers racing on a fresh store leave one head."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scim_pipeline.sync.pam.managed import ManagedPam, ManagedPermission
from scim_pipeline.sync.state import EscrowPolicy, ProvisioningState, StateBatch
from scim_pipeline.sync.state.migrations import _alembic_config
from scim_pipeline.sync.state.schema import metadata

HEAD = "0005"

# The schema exactly as the state store created it before Alembic (scim_pipeline/sync/state/, schema_version 1).
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS managed_users (
    key_norm TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    scim_id TEXT,
    shard INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'created',
    attrs TEXT NOT NULL DEFAULT '{}',
    attrs_hash INTEGER NOT NULL DEFAULT 0,
    active INTEGER,
    status TEXT NOT NULL DEFAULT 'ok',
    last_error TEXT,
    fail_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS managed_users_scim_id ON managed_users (scim_id);
CREATE TABLE IF NOT EXISTS managed_groups (
    key_norm TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    scim_id TEXT,
    origin TEXT NOT NULL DEFAULT 'created',
    attrs TEXT NOT NULL DEFAULT '{}',
    attrs_hash INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'ok',
    last_error TEXT,
    fail_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS managed_memberships (
    group_key_norm TEXT NOT NULL,
    user_key_norm TEXT NOT NULL,
    PRIMARY KEY (group_key_norm, user_key_norm)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    run_id TEXT,
    partition TEXT,
    resource_type TEXT NOT NULL,
    operation TEXT NOT NULL,
    key TEXT,
    scim_id TEXT,
    http_status INTEGER,
    scim_type TEXT,
    latency_ms REAL,
    attempts INTEGER,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS audit_run ON audit (run_id);
"""


def _legacy_store(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(LEGACY_SCHEMA)
        db.execute("INSERT INTO meta (name, value) VALUES ('schema_version', '1')")
        db.execute(
            "INSERT INTO managed_users (key_norm, key, scim_id, shard, origin, attrs, attrs_hash, active, status, "
            "fail_count, updated_at) VALUES ('alice', 'Alice', 'u1', 3, 'adopted', '{\"userName\": \"Alice\"}', "
            "-8070450532247928832, 1, 'ok', 0, 1700000000.5)"
        )
        db.execute(
            "INSERT INTO managed_groups (key_norm, key, scim_id, attrs, updated_at) "
            "VALUES ('admins', 'Admins', 'g1', '{}', 1700000000.5)"
        )
        db.execute("INSERT INTO managed_memberships VALUES ('admins', 'alice')")
        db.executemany(
            "INSERT INTO audit (at, run_id, resource_type, operation, key, scim_id, http_status, outcome) "
            "VALUES (?, 'old-run', 'Users', 'create', 'Alice', 'u1', 201, 'ok')",
            [(1700000000.0 + i,) for i in range(3)],
        )


def _revisions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def test_a_state_file_from_before_alembic_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _legacy_store(path)
    with ProvisioningState.open(path) as store:
        alice = store.get_user("alice")
        assert alice is not None
        assert (alice["scim_id"], alice["shard"], alice["origin"], alice["attrs_hash"]) == (
            "u1", 3, "adopted", -8070450532247928832,
        )  # fmt: skip
        assert store.managed_memberships().to_dict("records") == [
            {"group_key_norm": "admins", "user_key_norm": "alice"}
        ]
        assert list(store.audit("old-run")["id"]) == [1, 2, 3]
        # The upgraded store works as a new one: new audit ids follow the old ones, new tables are there.
        batch = StateBatch()
        batch.user_deletes.append("alice")
        store.apply(batch)
        store.set_value("source", "watermark", "42")
        assert store.managed_memberships().empty
    assert _revisions(f"sqlite:///{path}") == [HEAD]
    with sqlite3.connect(path) as db:
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"audit_run", "audit_key_at", "audit_at", "audit_outcome_status_at"} <= indexes
        assert db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == ("2",)


def test_a_store_with_pam_rows_from_revision_0003_keeps_them_and_gains_their_escrow(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
            conn.execute(
                sa.text(
                    "INSERT INTO managed_containers (name_norm, name, scim_id, origin, updated_at) "
                    "VALUES ('vault', 'Vault', 'c1', 'adopted', 1.0)"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO managed_permissions VALUES "
                    "('c1', 'group', 'auditors', 'Auditors', 'g2', '[\"View\"]', 'p1', 1.0)"
                )
            )
            conn.execute(sa.text("INSERT INTO managed_placements VALUES ('d1', 'prod-db-root', 'c1', 1.0)"))
    finally:
        engine.dispose()
    with ProvisioningState.open(path) as store:
        managed = ManagedPam.load(store)
        assert managed.containers == {"vault": ("Vault", "c1")}
        assert managed.permissions == [
            ManagedPermission("c1", "group", "auditors", "Auditors", "g2", frozenset({"View"}), "p1")
        ]
        assert managed.placements == {"d1": ("prod-db-root", "c1")}
        batch = StateBatch()
        batch.fail_container("Staging", error="HTTP 503")
        store.apply(batch, escrow=EscrowPolicy(after_failures=1))
        assert list(store.held("Containers")) == ["staging"]
    assert _revisions(f"sqlite:///{path}") == [HEAD]
    with sqlite3.connect(path) as db:
        tables = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert all(
        "WITHOUT ROWID" in tables[name] for name in ("managed_containers", "managed_permissions", "managed_placements")
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


def test_the_migrated_schema_is_exactly_the_tables_the_code_uses(fresh_url: str) -> None:
    ProvisioningState.open(fresh_url).close()
    engine = sa.create_engine(fresh_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_a_legacy_schema_upgraded_equals_a_fresh_one(tmp_path: Path) -> None:
    legacy, fresh = tmp_path / "legacy.sqlite", tmp_path / "fresh.sqlite"
    _legacy_store(legacy)
    for path in (legacy, fresh):
        ProvisioningState.open(path).close()

    def schema(path: Path) -> dict[str, object]:
        """Per table its columns (name, not null, default, primary key) and whether it has a rowid; the indexes.
        Type spellings differ (BIGINT / INTEGER, FLOAT / REAL) but SQLite gives them the same affinity; a fresh
        store spells NOT NULL on the primary keys of rowid tables, which the legacy DDL left implicit."""
        with sqlite3.connect(path) as db:
            objects = db.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
            return {
                name: (
                    [
                        (column[1], bool(column[3] or column[5]), column[4], column[5])
                        for column in db.execute(f"PRAGMA table_info({name})")
                    ],
                    "WITHOUT ROWID" in sql,
                )
                if kind == "table"
                else kind
                for kind, name, sql in objects
            }

    assert schema(legacy) == schema(fresh)


_OPENER = """
import sys
from scim_pipeline.sync.state import ProvisioningState
ProvisioningState.open(sys.argv[1]).close()
"""


def test_processes_opening_a_fresh_store_at_once_migrate_it_once(fresh_url: str) -> None:
    openers = [
        subprocess.Popen([sys.executable, "-c", _OPENER, fresh_url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [opener.communicate(timeout=120)[1] for opener in openers]
    assert [opener.returncode for opener in openers] == [0] * 6, errors
    assert _revisions(fresh_url) == [HEAD]
