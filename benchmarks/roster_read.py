"""Reading and normalizing a large roster: the folder source (Parquet, CSV, JSONL) and `build_roster`.

    python benchmarks/roster_read.py                 # 1,000,000 users, 1,000 groups, 1,000,000 memberships
    python benchmarks/roster_read.py --users 100000  # a quick run
    python benchmarks/roster_read.py --jsonl         # also time JSON Lines

The roster is generated into a temporary folder (realistic values, every default column, 0.1 % bad rows so
validation has work to do), written once per format, then read back and normalized. Figures are wall-clock seconds
of the best of `--repeat` runs, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from scim_pipeline.sources import FolderRosterSource, RawRoster
from scim_pipeline.sync.plan.mapping import build_roster

T = TypeVar("T")
DEPARTMENTS = np.array(["Engineering", "Security", "IT Operations", "Finance", "Sales", "People", "Legal"])
TITLES = np.array(["Engineer", "Analyst", "Administrator", "Manager", "Director", "Specialist"])
GIVEN = np.array(["Ann", "Bob", "Chen", "Dmitri", "Ebony", "Farid", "Greta", "Hiroshi", "Ingrid", "José", "Zoë"])
FAMILY = np.array(["Lee", "Okafor", "Müller", "O'Brien", "Nakamura", "Kowalski", "García", "Lindqvist", "Ng"])


def generate(users: int, groups: int, memberships: int, seed: int = 7) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    numbers = np.arange(users)
    given = GIVEN[rng.integers(len(GIVEN), size=users)]
    family = FAMILY[rng.integers(len(FAMILY), size=users)]
    user_name = pd.Series(numbers).map("user{:07d}".format).to_numpy()
    bad = rng.random(users) < 0.001  # duplicates of the previous user name, in another case
    user_name[bad & (numbers > 0)] = np.char.upper(user_name[np.flatnonzero(bad & (numbers > 0)) - 1].astype(str))
    active = np.where(rng.random(users) < 0.03, "false", "true")
    manager = np.where(numbers > 0, user_name[rng.integers(0, np.maximum(numbers, 1))], "")
    user_table = pa.table(
        {
            "user_name": user_name.astype(str),
            "external_id": pd.Series(numbers).map("E{:08d}".format).to_numpy(),
            "given_name": given,
            "family_name": family,
            "display_name": np.char.add(np.char.add(given, " "), family),
            "email": np.char.add(user_name.astype(str), "@example.com"),
            "active": active,
            "department": DEPARTMENTS[rng.integers(len(DEPARTMENTS), size=users)],
            "title": TITLES[rng.integers(len(TITLES), size=users)],
            "employee_number": pd.Series(numbers).map("{:07d}".format).to_numpy(),
            "manager": manager.astype(str),
        }
    )
    group_names = pd.Series(np.arange(groups)).map("group-{:05d}".format).to_numpy()
    group_table = pa.table({"group_name": group_names, "external_id": np.char.add("G", group_names.astype(str))})
    membership_table = pa.table(
        {
            "group_name": group_names[rng.integers(groups, size=memberships)],
            "user_name": user_name[rng.integers(users, size=memberships)].astype(str),
        }
    )
    return {"users": user_table, "groups": group_table, "memberships": membership_table}


def write(tables: dict[str, pa.Table], folder: Path, fmt: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    size = 0
    for name, table in tables.items():
        path = folder / f"{name}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path)
        elif fmt == "csv":
            pa_csv.write_csv(table, path)
        else:
            table.to_pandas().to_json(path, orient="records", lines=True, force_ascii=False)
        size += path.stat().st_size
    return size


def best_of(repeat: int, call: Callable[[], T]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--memberships", type=int, default=None, help="default: as many as users")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--jsonl", action="store_true", help="also time the JSON Lines reader")
    args = parser.parse_args()
    memberships = args.users if args.memberships is None else args.memberships

    start = time.perf_counter()
    tables = generate(args.users, args.groups, memberships)
    print(
        f"generated {args.users:,} users, {args.groups:,} groups, {memberships:,} memberships "
        f"in {time.perf_counter() - start:.1f} s"
    )
    formats = ["parquet", "csv", *(["jsonl"] if args.jsonl else [])]
    print(f"{'step':<40} {'seconds':>8} {'rows/s':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        raw: RawRoster | None = None
        for fmt in formats:
            folder = Path(tmp) / fmt
            size = write(tables, folder, fmt)
            seconds, raw = best_of(args.repeat, FolderRosterSource(folder).read)
            rows = raw.users.rows_read + sum(t.rows_read for t in (raw.groups, raw.memberships) if t is not None)
            label = f"read {fmt} ({size / 1e6:,.0f} MB, all tables)"
            print(f"{label:<40} {seconds:>8.2f} {rows / seconds:>12,.0f}")
        assert raw is not None
        final = raw
        seconds, roster = best_of(args.repeat, lambda: build_roster(final, shards=args.shards))
        rows = final.users.rows_read
        print(f"{'build_roster (validate, map, shard)':<40} {seconds:>8.2f} {rows / seconds:>12,.0f}")
    stats = roster.stats
    print(
        f"accepted {stats['users_accepted']:,} users ({stats['users_rejected']:,} rejected), "
        f"{stats['groups_accepted']:,} groups, {stats['memberships_accepted']:,} memberships "
        f"({stats['memberships_rejected']:,} rejected, {stats['memberships_duplicates']:,} duplicates); "
        f"{stats['users_manager_dropped']:,} managers dropped"
    )
    print(f"peak resident memory: {peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
