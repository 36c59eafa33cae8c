"""The provisioning state store: what we manage survives a crash, and the audit keeps only what it may.

Every behavioural test runs on SQLite and on a real PostgreSQL server (tests/postgres.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from scim_pipeline.scim import ConfigurationError
from scim_pipeline.sync.state import (
    UNKNOWN_HASH,
    AuditRecord,
    EscrowPolicy,
    ManagedCounts,
    ProvisioningState,
    StateBatch,
    attrs_hashes,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def state(state_url: str) -> Iterator[ProvisioningState]:
    with ProvisioningState.open(state_url) as store:
        yield store


def _record_alice(store: ProvisioningState) -> None:
    batch = StateBatch()
    batch.upsert_user("alice", key="Alice", scim_id="u1", shard=3, attrs={"userName": "Alice", "active": True})
    batch.audit.append(AuditRecord("Users", "create", "Alice", "ok", scim_id="u1", http_status=201, run_id="r1"))
    store.apply(batch)


@pytest.mark.parametrize("form", ["sqlite:///{path}", "{path}"])
def test_open_accepts_sqlite_urls_and_plain_paths(tmp_path: Path, form: str) -> None:
    path = tmp_path / "nested" / "state.db"
    with ProvisioningState.open(form.format(path=path)) as store:
        _record_alice(store)
    assert path.exists()


@pytest.mark.parametrize("url", ["mysql://db/state", "https://example.com/state", "sqlite://relative.db", ""])
def test_other_urls_are_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_STATE_URL"):
        ProvisioningState.open(url)


def test_postgresql_urls_open_the_same_store_with_either_spelling(postgres_url: str) -> None:
    with ProvisioningState.open(postgres_url) as store:
        _record_alice(store)
        assert store.dialect == "postgresql"
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with ProvisioningState.open(plain) as store:
        assert store.get_user("alice") is not None


def test_an_unreachable_database_is_one_line_naming_the_variable_but_no_password(postgres_server: object) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_STATE_URL") as raised:
        ProvisioningState.open("postgresql://scim:hunter2@127.0.0.1:1/state")
    assert "hunter2" not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_outcomes_are_committed_at_once_and_survive_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = ProvisioningState.open(path)
    _record_alice(store)
    # Another process reading the file right now (no close, no checkpoint) sees the outcome.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT scim_id FROM managed_users WHERE key_norm = 'alice'").fetchone() == ("u1",)
    store.close()
    with ProvisioningState.open(path) as reopened:
        users = reopened.managed_users()
        assert users[["key_norm", "scim_id", "shard", "origin"]].to_dict("records") == [
            {"key_norm": "alice", "scim_id": "u1", "shard": 3, "origin": "created"}
        ]
        assert reopened.get_user("alice")["attrs"] == {"userName": "Alice", "active": True}


def test_pending_create_marker_is_kept_until_an_outcome_arrives(state: ProvisioningState) -> None:
    state.mark_pending_creates("Users", [("bob", "Bob", 1)])
    row = state.get_user("bob")
    assert row is not None
    assert (row["status"], row["scim_id"]) == ("pending_create", None)
    batch = StateBatch()
    batch.upsert_user("bob", key="Bob", scim_id="u2", shard=1, attrs={"userName": "Bob"}, origin="adopted")
    state.apply(batch)
    row = state.get_user("bob")
    assert row is not None
    assert (row["status"], row["scim_id"], row["origin"]) == ("ok", "u2", "adopted")


def test_marking_pending_never_downgrades_a_managed_user(state: ProvisioningState) -> None:
    _record_alice(state)
    state.mark_pending_creates("Users", [("alice", "Alice", 3)])
    state.clear_pending_creates("Users", ["alice"])
    row = state.get_user("alice")
    assert row is not None
    assert (row["status"], row["scim_id"]) == ("ok", "u1")


def test_repeated_failures_put_an_identity_in_escrow_with_growing_delay(state: ProvisioningState) -> None:
    policy = EscrowPolicy(after_failures=2, base_delay_s=100.0, max_delay_s=1000.0)
    _record_alice(state)
    for _ in range(1):
        batch = StateBatch()
        batch.fail_user("alice", key="Alice", error="HTTP 400 invalidValue")
        state.apply(batch, escrow=policy)
    assert state.held("Users") == {}
    delays = []
    for _ in range(3):
        batch = StateBatch()
        batch.fail_user("alice", key="Alice", error="HTTP 400 invalidValue")
        state.apply(batch, escrow=policy)
        held = state.held("Users")["alice"]
        delays.append(round(held.next_attempt_at - time.time(), -1))
        assert held.last_error == "HTTP 400 invalidValue"
    assert delays == [100.0, 200.0, 400.0]
    row = state.get_user("alice")
    assert row is not None
    assert row["scim_id"] == "u1", "a failure never forgets a managed user"
    batch = StateBatch()
    batch.upsert_user("alice", key="Alice", scim_id="u1", shard=3, attrs={"userName": "Alice"})
    state.apply(batch)
    assert state.held("Users") == {}


def test_user_delete_forgets_its_memberships(state: ProvisioningState) -> None:
    _record_alice(state)
    batch = StateBatch()
    batch.membership_adds.append(("admins", "alice"))
    state.apply(batch)
    batch = StateBatch()
    batch.user_deletes.append("alice")
    state.apply(batch)
    assert state.managed_users().empty
    assert state.managed_memberships().empty


def test_audit_holds_the_matching_key_but_no_attribute_value(state: ProvisioningState) -> None:
    _record_alice(state)
    audit = state.audit("r1")
    assert list(audit.columns) == [
        "id", "at", "run_id", "partition", "resource_type", "operation", "key", "scim_id", "http_status",
        "scim_type", "latency_ms", "attempts", "outcome", "error",
    ]  # fmt: skip
    assert audit[["operation", "key", "outcome", "http_status"]].to_dict("records") == [
        {"operation": "create", "key": "Alice", "outcome": "ok", "http_status": 201}
    ]


def test_roster_hash_changes_with_any_value_and_ignores_empty_versus_missing() -> None:
    frame = pd.DataFrame(
        {
            "userName": pd.array(["a", "a", "a", "a", "a"], dtype="string"),
            "active": pd.array([True, False, True, True, True], dtype="bool"),
            "title": pd.array(["x", "x", "y", None, ""], dtype="string"),
        }
    )
    hashes = list(attrs_hashes(frame, ["userName", "active", "title"]))
    assert len(set(hashes[:4])) == 4, "active and title changes are seen"
    assert hashes[3] == hashes[4], "an empty value counts as no value"
    assert UNKNOWN_HASH not in hashes
    assert list(attrs_hashes(frame, ["title", "active", "userName"])) == hashes, "column order does not matter"


def test_ten_thousand_outcomes_are_recorded_quickly(state_url: str) -> None:
    with ProvisioningState.open(state_url) as store:
        started = time.perf_counter()
        for start in range(0, 10_000, 200):
            batch = StateBatch()
            for i in range(start, start + 200):
                batch.upsert_user(f"u{i}", key=f"U{i}", scim_id=f"id{i}", shard=i % 16, attrs={"userName": f"U{i}"})
                batch.audit.append(AuditRecord("Users", "create", f"U{i}", "ok", scim_id=f"id{i}"))
            store.apply(batch)
        elapsed = time.perf_counter() - started
        assert len(store.managed_users()) == 10_000
    assert elapsed < 5.0, "10,000 outcomes take ~0.6 s on SQLite, ~1 s on PostgreSQL on an idle 2-core machine"


def test_frames_have_the_same_columns_and_dtypes_on_every_database(state: ProvisioningState) -> None:
    _record_alice(state)
    batch = StateBatch()
    batch.upsert_user("bob", key="Bob", scim_id=None, shard=0, attrs={"userName": "Bob"}, status="pending_create")
    batch.upsert_group("admins", key="Admins", scim_id="g1", attrs={"displayName": "Admins"}, attrs_hash=42)
    batch.membership_adds.append(("admins", "alice"))
    state.apply(batch)
    users = state.managed_users()
    assert {name: str(dtype) for name, dtype in users.dtypes.items()} == {
        "key_norm": "string", "key": "string", "scim_id": "string", "shard": "int64", "origin": "string",
        "attrs": "string", "attrs_hash": "int64", "active": "boolean", "status": "string", "fail_count": "int64",
        "next_attempt_at": "float64",
    }  # fmt: skip
    active = users.set_index("key_norm")["active"]
    assert bool(active["alice"]) is True
    assert pd.isna(active["bob"]), "unknown activity stays unknown"
    groups = state.managed_groups()
    assert groups[["key_norm", "scim_id", "attrs_hash"]].to_dict("records") == [
        {"key_norm": "admins", "scim_id": "g1", "attrs_hash": 42}
    ]
    snapshot = state.snapshot([3])
    assert list(snapshot.users["key_norm"]) == ["alice"]
    assert "attrs" not in snapshot.users.columns
    assert snapshot.attrs_of("Users", snapshot.users) == ['{"active": true, "userName": "Alice"}']
    assert snapshot.memberships.to_dict("records") == [{"group_key_norm": "admins", "user_key_norm": "alice"}]


def test_counts_ids_and_observed_values_are_read_back(state: ProvisioningState) -> None:
    _record_alice(state)
    batch = StateBatch()
    batch.upsert_user("carol", key="Carol", scim_id="u3", shard=1, attrs={"userName": "Carol", "active": False})
    batch.upsert_group("admins", key="Admins", scim_id="g1", attrs={"displayName": "Admins"})
    state.apply(batch)
    assert state.counts() == ManagedCounts(users=2, active_users=1, groups=1)
    assert state.counts([3]) == ManagedCounts(users=1, active_users=1, groups=1)
    assert state.user_ids() == {"alice": "u1", "carol": "u3"}
    assert not state.is_empty()
    state.set_observed_attrs("Users", {"carol": {"userName": "Carol", "active": True, "title": "CFO"}})
    carol = state.get_user("carol")
    assert carol is not None
    assert (carol["attrs"]["title"], carol["active"], carol["attrs_hash"]) == ("CFO", 1, UNKNOWN_HASH)
    refresh = StateBatch()
    refresh.user_hash_refreshes.append((7, "carol"))
    state.apply(refresh)
    carol = state.get_user("carol")
    assert carol is not None
    assert carol["attrs_hash"] == 7


def test_adding_a_membership_twice_keeps_one_pair(state: ProvisioningState) -> None:
    for _ in range(2):
        batch = StateBatch()
        batch.membership_adds.extend([("admins", "alice"), ("admins", "alice")])
        state.apply(batch)
    assert len(state.managed_memberships()) == 1
    batch = StateBatch()
    batch.membership_removes.append(("admins", "alice"))
    state.apply(batch)
    assert state.managed_memberships().empty


def test_a_failed_create_is_remembered_without_an_id_and_an_update_keeps_the_origin(state: ProvisioningState) -> None:
    batch = StateBatch()
    batch.fail_group("ops", key="Ops", error="HTTP 500")
    batch.fail_group("ops", key="Ops", error="HTTP 503")
    state.apply(batch)
    ops = state.get_group("ops")
    assert ops is not None
    assert (ops["scim_id"], ops["status"], ops["fail_count"], ops["last_error"]) == (None, "failed", 2, "HTTP 503")
    adopt = StateBatch()
    adopt.upsert_group("ops", key="Ops", scim_id="g9", attrs={"displayName": "Ops"}, origin="adopted")
    state.apply(adopt)
    update = StateBatch()
    update.upsert_group("ops", key="Ops", scim_id=None, attrs={"displayName": "Ops"})
    state.apply(update)
    ops = state.get_group("ops")
    assert ops is not None
    assert (ops["scim_id"], ops["origin"], ops["status"], ops["fail_count"]) == ("g9", "adopted", "ok", 0)


def test_settings_are_kept_per_namespace_and_replaced(state: ProvisioningState) -> None:
    assert state.get_value("source:entra", "delta_link") is None
    state.set_value("source:entra", "delta_link", "https://graph.example/delta?token=1")
    state.set_value("target:default", "delta_link", "other")
    state.set_value("source:entra", "delta_link", "https://graph.example/delta?token=2")
    assert state.get_value("source:entra", "delta_link") == "https://graph.example/delta?token=2"
    assert state.get_value("target:default", "delta_link") == "other"


def test_audit_queries_answer_by_person_run_time_and_failure(state: ProvisioningState) -> None:
    batch = StateBatch()
    batch.audit.extend(
        [
            AuditRecord("Users", "create", "Alice", "ok", http_status=201, run_id="r1", at=100.0),
            AuditRecord("Users", "update", "Bob", "failed", http_status=400, run_id="r1", at=110.0, error="bad"),
            AuditRecord("Users", "update", "Alice", "failed", http_status=503, run_id="r2", at=200.0),
            AuditRecord("Groups", "create", "Admins", "ok", http_status=201, run_id="r2", at=210.0),
        ]
    )
    state.apply(batch)

    def keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
        return list(zip(frame["key"], frame["operation"], strict=True))

    assert keys(state.audit_query(key="Alice")) == [("Alice", "create"), ("Alice", "update")]
    assert keys(state.audit("r2")) == [("Alice", "update"), ("Admins", "create")]
    assert keys(state.audit_query(since=110.0, until=210.0)) == [("Bob", "update"), ("Alice", "update")]
    assert keys(state.audit_query(failed=True)) == [("Bob", "update"), ("Alice", "update")]
    assert keys(state.audit_query(failed=True, http_status=503)) == [("Alice", "update")]
    assert keys(state.audit_query(resource_type="Groups")) == [("Admins", "create")]
    assert keys(state.audit_query(limit=2)) == [("Alice", "update"), ("Admins", "create")]


def test_sqlite_store_uses_wal_and_waits_for_the_lock(tmp_path: Path) -> None:
    with ProvisioningState.open(tmp_path / "state.db") as store, store._read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30000


_WRITER = """
import sys
from scim_pipeline.sync.state import AuditRecord, ProvisioningState, StateBatch
shard = int(sys.argv[2])
with ProvisioningState.open(sys.argv[1]) as store:
    for start in range(0, 2000, 50):
        batch = StateBatch()
        for i in range(start, start + 50):
            key = f"s{shard}-u{i}"
            batch.upsert_user(key, key=key, scim_id=f"id-{key}", shard=shard, attrs={"userName": key})
            batch.audit.append(AuditRecord("Users", "create", key, "ok", run_id=f"run-{shard}"))
        store.apply(batch)
"""


def test_many_processes_write_one_sqlite_store_at_once_as_a_backfill_does(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, url, str(shard)], stderr=subprocess.PIPE, text=True)
        for shard in range(6)
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0] * 6, errors
    with ProvisioningState.open(url) as store:
        assert store.counts().users == 12_000
        assert len(store.audit()) == 12_000
