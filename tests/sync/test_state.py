"""The provisioning state store: what we manage survives a crash, and the audit keeps only what it may."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from scim_pipeline.scim import ConfigurationError
from scim_pipeline.sync.state import (
    UNKNOWN_HASH,
    AuditRecord,
    EscrowPolicy,
    ProvisioningState,
    StateBatch,
    attrs_hashes,
)


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


@pytest.mark.parametrize("url", ["postgresql://db/state", "https://example.com/state", "sqlite://relative.db"])
def test_other_urls_are_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_STATE_URL"):
        ProvisioningState.open(url)


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


def test_ten_thousand_outcomes_are_recorded_quickly(tmp_path: Path) -> None:
    with ProvisioningState.open(tmp_path / "state.db") as store:
        started = time.perf_counter()
        for start in range(0, 10_000, 200):
            batch = StateBatch()
            for i in range(start, start + 200):
                batch.upsert_user(f"u{i}", key=f"U{i}", scim_id=f"id{i}", shard=i % 16, attrs={"userName": f"U{i}"})
                batch.audit.append(AuditRecord("Users", "create", f"U{i}", "ok", scim_id=f"id{i}"))
            store.apply(batch)
        elapsed = time.perf_counter() - started
        assert len(store.managed_users()) == 10_000
    assert elapsed < 5.0, "10,000 outcomes take ~0.6 s on an idle 2-core machine"
