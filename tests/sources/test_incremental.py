"""The read cycle every connector shares: snapshot merge, nested groups, cache and watermark bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from scim_pipeline.sources import FullReadPolicy, MemoryWatermarkStore
from scim_pipeline.sources._incremental import (
    Counters,
    Delta,
    Snapshot,
    SnapshotSource,
    StaleWatermarkError,
    roster_from_snapshot,
)


def user(ref: str, name: str, **values: str | None) -> dict[str, str | None]:
    return {"source_ref": ref, "user_name": name, "external_id": f"id-{ref}", **values}


def test_nested_groups_are_flattened_and_a_loop_ends() -> None:
    snapshot = Snapshot.build(
        [user("u1", "ann"), user("u2", "bob"), user("u3", "cid")],
        [{"source_ref": g, "group_name": g.upper()} for g in ("a", "b", "c")],
        [("a", "u1"), ("a", "b"), ("b", "u2"), ("b", "c"), ("c", "a"), ("c", "u3"), ("c", "ghost")],
    )

    memberships = roster_from_snapshot(snapshot, "test").memberships
    assert memberships is not None

    pairs = set(zip(memberships.frame["group_name"], memberships.frame["user_name"], strict=True))
    assert pairs == {(g, u) for g in ("A", "B", "C") for u in ("ann", "bob", "cid")}


def test_a_manager_reference_becomes_the_managers_user_name() -> None:
    snapshot = Snapshot.build(
        [user("u1", "ann"), user("u2", "bob", manager_ref="u1"), user("u3", "cid", manager_ref="x")]
    )

    users = roster_from_snapshot(snapshot, "test").users.frame.set_index("user_name")

    assert users.loc["bob", "manager"] == "ann"
    assert users["manager"].isna().tolist() == [True, False, True]  # ann has none; cid's is outside the roster


def test_a_primary_group_is_a_membership_kept_with_the_user() -> None:
    snapshot = Snapshot.build(
        [user("u1", "ann", primary_group_ref="g1"), user("u2", "bob")],
        [{"source_ref": "g1", "group_name": "Staff"}, {"source_ref": "g2", "group_name": "All"}],
        [("g2", "g1"), ("g2", "u2")],
    )

    memberships = roster_from_snapshot(snapshot, "test").memberships
    assert memberships is not None

    pairs = set(zip(memberships.frame["group_name"], memberships.frame["user_name"], strict=True))
    assert pairs == {("Staff", "ann"), ("All", "ann"), ("All", "bob")}


def test_a_hidden_group_is_no_roster_group_but_passes_its_members_on() -> None:
    snapshot = Snapshot.build(
        [user("u1", "ann", primary_group_ref="builtin"), user("u2", "bob")],
        [
            {"source_ref": "builtin", "group_name": "Domain Users", "hidden": "true"},
            {"source_ref": "g1", "group_name": "All Staff"},
        ],
        [("g1", "builtin"), ("builtin", "u2")],
    )

    roster = roster_from_snapshot(snapshot, "test")

    assert roster.groups is not None
    assert list(roster.groups.frame["group_name"]) == ["All Staff"]
    assert roster.memberships is not None
    assert set(roster.memberships.frame["group_name"]) == {"All Staff"}
    assert set(roster.memberships.frame["user_name"]) == {"ann", "bob"}


def test_a_renamed_entry_replaces_its_old_row_by_external_id() -> None:
    cached = Snapshot.build([user("uid=ann,ou=a", "ann"), user("uid=bob,ou=a", "bob")])
    renamed = {**user("uid=ann,ou=b", "ann"), "external_id": "id-uid=ann,ou=a"}

    merged = Delta(users=[renamed]).merged_into(cached)

    assert sorted(merged.users["source_ref"]) == ["uid=ann,ou=b", "uid=bob,ou=a"]


def test_a_partial_delta_keeps_what_it_leaves_out_and_clears_what_it_empties() -> None:
    cached = Snapshot.build([user("u1", "ann", title="Clerk", department="Ops")])

    merged = Delta(users=[{"source_ref": "u1", "title": "Lead", "department": ""}], partial=True).merged_into(cached)

    row = merged.users.iloc[0]
    assert row["title"] == "Lead"
    assert row["department"] == ""
    assert row["user_name"] == "ann"


@dataclass(kw_only=True)
class CountingSource(SnapshotSource):
    """A source over an in-memory directory that records which kind of read it was asked for."""

    kind: ClassVar[str] = "counting"
    policy: FullReadPolicy = field(default_factory=FullReadPolicy)
    reads: list[str] = field(default_factory=list)
    refuse_watermark: bool = False

    @property
    def server(self) -> str:
        return "memory"

    @property
    def full_read(self) -> FullReadPolicy:
        return self.policy

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        self.reads.append("full")
        counters.entries += 2
        return Snapshot.build([user("u1", "ann"), user("u2", "bob")]), f"w{len(self.reads)}"

    def _read_changes(self, watermark: str, counters: Counters) -> tuple[Delta, str]:
        if self.refuse_watermark:
            raise StaleWatermarkError("expired")
        self.reads.append(f"since {watermark}")
        return Delta(), f"w{len(self.reads)}"


def test_full_reads_come_back_every_n_reads_and_after_max_age(tmp_path: Path) -> None:
    now = [1_000_000.0]
    source = CountingSource(
        cache_dir=tmp_path,
        watermarks=MemoryWatermarkStore(),
        policy=FullReadPolicy(every_cycles=3, max_age_hours=1),
        clock=lambda: now[0],
    )
    for _ in range(4):
        source.read()
    now[0] += 3601
    source.read()

    assert source.reads == ["full", "since w1", "since w2", "full", "full"]


def test_without_a_watermark_store_every_read_is_full(tmp_path: Path) -> None:
    source = CountingSource(cache_dir=tmp_path, watermarks=None)

    source.read()
    _, report = source.read_with_report()

    assert source.reads == ["full", "full"]
    assert "no cache folder or watermark store" in report.reason


def test_a_cache_from_another_generation_is_not_merged_into(tmp_path: Path) -> None:
    watermarks = MemoryWatermarkStore()
    source = CountingSource(cache_dir=tmp_path, watermarks=watermarks)
    source.read()
    other = CountingSource(cache_dir=tmp_path, watermarks=MemoryWatermarkStore())
    other.read()  # the same cache folder, rewritten under another watermark store

    _, report = source.read_with_report()

    assert report.mode == "full"
    assert "does not match the watermark" in report.reason


def test_a_watermark_the_idp_no_longer_accepts_makes_the_read_full(tmp_path: Path) -> None:
    source = CountingSource(cache_dir=tmp_path, watermarks=MemoryWatermarkStore())
    source.read()
    source.refuse_watermark = True

    roster, report = source.read_with_report()

    assert source.reads == ["full", "full"]
    assert report.mode == "full"
    assert report.reason == "the watermark is no longer accepted (expired)"
    assert len(roster.users.frame) == 2


@dataclass(kw_only=True)
class ListingSource(SnapshotSource):
    """A connector whose changes are found against the cached snapshot (as LDAP's deletion check is)."""

    kind: ClassVar[str] = "listing"
    present: set[str] = field(default_factory=lambda: {"u1", "u2"})

    @property
    def server(self) -> str:
        return "listing://test"

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        return Snapshot.build([user(ref, ref) for ref in sorted(self.present)]), "w"

    def _read_changes_from(self, watermark: str, counters: Counters, cached: Snapshot) -> tuple[Delta, str]:
        return Delta(removed_refs=set(cached.users["source_ref"]) - self.present), "w"


def test_changes_read_against_the_cache_remove_what_is_gone(tmp_path: Path) -> None:
    source = ListingSource(cache_dir=tmp_path, watermarks=MemoryWatermarkStore())
    source.read()
    source.present = {"u1"}

    roster, report = source.read_with_report()

    assert report.mode == "incremental"
    assert list(roster.users.frame["user_name"]) == ["u1"]


def test_a_cache_of_an_older_format_makes_the_read_full(tmp_path: Path) -> None:
    source = ListingSource(cache_dir=tmp_path, watermarks=MemoryWatermarkStore())
    source.read()
    for meta in tmp_path.rglob("snapshot.json"):
        meta.write_text(meta.read_text().replace('"format": 2', '"format": 1'))

    _, report = source.read_with_report()

    assert report.mode == "full"  # format 1 keyed LDAP entries by DN: never merged into
