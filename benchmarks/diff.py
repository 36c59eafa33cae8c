"""Change sets at scale: the pandas plan against a plain-Python dict diff, and the state store's write speed.

    python benchmarks/diff.py                  # 1,000,000 roster users vs 1,000,000 managed, 1 % changed
    python benchmarks/diff.py --users 100000   # a quick run

Each variant runs in its own subprocess, so its peak memory is its own: the peak resident set is reset
(/proc/self/clear_refs) once the inputs are built, and both the peak over the inputs and the process's total peak
are reported. Inputs are identical for both diff variants: the normalized roster frame (docs/internals.md) and the
managed-users frame exactly as ``ProvisioningState.managed_users()`` returns it (attribute JSON and hash per user).

- ``pandas``: ``plan_users`` — joins on key_norm, one 64-bit hash compare per identity, PATCH operations built for
  the changed rows only.
- ``dict``: what one would write without pandas — roster rows into dicts keyed by key_norm, stored attributes
  decoded from JSON, a loop comparing dicts, PATCH operations for the changed rows (the same ``patch_operations``).
- ``state``: 10,000 outcomes (upsert + audit row each) written in the executor's batches of 200, then one
  transaction per outcome; and reading every managed user back as a DataFrame.

These machines have 2 noisy cores: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scim_pipeline.sync.plan.changes import PlanSettings, plan_users, user_attribute_columns
from scim_pipeline.sync.plan.payloads import is_missing, patch_operations, user_body
from scim_pipeline.sync.state import (
    PLAN_USER_COLUMNS,
    AuditRecord,
    ManagedSnapshot,
    ProvisioningState,
    StateBatch,
    attrs_hashes,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
EMAIL = 'emails[type eq "work"].value'
GIB = 1024**3


def _status_kib(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def _peak_kib() -> int:
    return _status_kib("VmHWM")


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _roster(names: list[str], title_of: np.ndarray[Any, Any], seed_offset: int = 0) -> pd.DataFrame:
    n = len(names)
    idx = np.arange(n) + seed_offset
    columns: dict[str, Any] = {
        "key": names,
        "key_norm": names,
        "shard": idx % 16,
        "row": np.arange(n) + 2,
        "userName": names,
        "externalId": [f"E{i}" for i in idx],
        "name.givenName": [f"Given{i % 5000}" for i in idx],
        "name.familyName": [f"Family{i % 7000}" for i in idx],
        "displayName": [f"Given{i % 5000} Family{i % 7000}" for i in idx],
        EMAIL: [f"{u}@example.com" for u in names],
        "active": np.ones(n, dtype=bool),
        "title": [f"Title{t}" for t in title_of],
        f"{ENTERPRISE}:department": [f"Dept{i % 30}" for i in idx],
        f"{ENTERPRISE}:employeeNumber": [str(i) for i in idx],
    }
    frame = pd.DataFrame(columns)
    for name in frame.columns:
        if name not in {"shard", "row", "active"}:
            frame[name] = frame[name].astype("string")
    return frame


def _attrs_json(frame: pd.DataFrame, columns: list[str]) -> pa.Array:
    """The stored JSON of each row, built with Arrow (setup only; generated values need no JSON escaping)."""
    empty = pa.scalar("", pa.large_string())
    pieces = []
    for path in columns:
        column = frame[path]
        if pd.api.types.is_bool_dtype(column.dtype):
            value = pc.if_else(
                pa.array(column), pa.scalar("true", pa.large_string()), pa.scalar("false", pa.large_string())
            )
        else:
            text = pa.array(column).cast(pa.large_string())
            value = pc.binary_join_element_wise(
                pa.scalar('"', pa.large_string()), text, pa.scalar('"', pa.large_string()), empty
            )
        key = pa.scalar(json.dumps(path) + ":", pa.large_string())
        pieces.append(pc.binary_join_element_wise(key, value, empty))
    body = pc.binary_join_element_wise(*pieces, pa.scalar(",", pa.large_string()))
    return pc.binary_join_element_wise(
        pa.scalar("{", pa.large_string()), body, pa.scalar("}", pa.large_string()), empty
    )


def make_inputs(users: int, changed: float, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A roster of ``users`` and a managed state of ``users`` where ``changed`` of them differ: 40 % of the changes
    are attribute updates, 30 % new roster users (creates), 30 % users gone from the roster (disables)."""
    rng = np.random.default_rng(seed)
    n_changes = int(users * changed)
    n_updates, n_new = int(n_changes * 0.4), int(n_changes * 0.3)
    n_gone = n_new
    managed_names = [f"user{i:08d}" for i in range(users)]
    titles = rng.integers(0, 50, users)
    before = _roster(managed_names, titles)
    kept = users - n_gone
    new_names = [f"new{i:08d}" for i in range(n_new)]
    roster_titles = titles[:kept].copy()
    updated = rng.choice(kept, n_updates, replace=False)
    roster_titles[updated] = 99
    roster = pd.concat(
        [_roster(managed_names[:kept], roster_titles), _roster(new_names, rng.integers(0, 50, n_new), users)],
        ignore_index=True,
    )
    columns = user_attribute_columns(before)
    managed = pd.DataFrame(
        {
            "key_norm": before["key_norm"],
            "key": before["key"],
            "scim_id": pd.array([f"id-{i}" for i in range(users)], dtype="string"),
            "shard": before["shard"].astype("int64"),
            "origin": pd.array(["created"] * users, dtype="string"),
            "attrs": pd.array(_attrs_json(before, columns), dtype=pd.ArrowDtype(pa.large_string())).astype("string"),
            "attrs_hash": attrs_hashes(before, columns),
            "active": pd.array(np.ones(users, dtype=bool), dtype="boolean"),
            "status": pd.array(["ok"] * users, dtype="string"),
            "fail_count": np.zeros(users, dtype=np.int64),
            "next_attempt_at": np.full(users, np.nan),
        }
    )
    return roster, managed


def pandas_inputs(managed: pd.DataFrame) -> ManagedSnapshot:
    """The snapshot as ``ProvisioningState.snapshot()`` hands it over: the lean columns, and a loader for the
    attributes of changed rows (here a dict standing in for the SQLite lookup the state store does)."""
    stored = dict(zip(managed["key_norm"].to_numpy(dtype=object), managed["attrs"].to_numpy(dtype=object), strict=True))
    empty = ManagedSnapshot.empty()
    return ManagedSnapshot(
        users=managed[list(PLAN_USER_COLUMNS)].copy(),
        groups=empty.groups,
        memberships=empty.memberships,
        attrs_loader=lambda _kind, keys: {k: stored[k] for k in keys},
    )


def diff_with_pandas(roster: pd.DataFrame, snapshot: ManagedSnapshot) -> dict[str, int]:
    plan = plan_users(roster, snapshot, PlanSettings())
    return {op: int(n) for op, n in plan["op"].value_counts().items()}


def diff_with_dicts(roster: pd.DataFrame, managed: pd.DataFrame) -> dict[str, int]:
    columns = user_attribute_columns(roster)
    values = [roster[c].tolist() for c in columns]
    desired: dict[str, dict[str, Any]] = {}
    for key_norm, row in zip(roster["key_norm"].tolist(), zip(*values, strict=True), strict=True):
        desired[key_norm] = {c: v for c, v in zip(columns, row, strict=True) if not is_missing(v)}
    current = {k: json.loads(a) for k, a in zip(managed["key_norm"].tolist(), managed["attrs"].tolist(), strict=True)}
    ops: dict[str, int] = {}
    payloads: list[str] = []
    for key_norm, new in desired.items():
        old = current.get(key_norm)
        if old is None:
            if new.get("active", True):
                payloads.append(json.dumps(user_body(new)[0]))
                ops["create"] = ops.get("create", 0) + 1
        elif old != new:
            operations, _ = patch_operations(old, new, paths=columns)
            if operations:
                payloads.append(json.dumps(operations))
                ops["update"] = ops.get("update", 0) + 1
    for key_norm, old in current.items():
        if key_norm not in desired and old.get("active", True):
            payloads.append(json.dumps([{"op": "replace", "path": "active", "value": False}]))
            ops["disable"] = ops.get("disable", 0) + 1
    return ops


def state_writes(users: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder, ProvisioningState.open(Path(folder) / "state.db") as store:
        started = time.perf_counter()
        for start in range(0, 10_000, 200):
            batch = StateBatch()
            for i in range(start, start + 200):
                attrs = {"userName": f"user{i}", "title": "Engineer", "active": True}
                batch.upsert_user(f"user{i}", key=f"user{i}", scim_id=f"id-{i}", shard=i % 16, attrs=attrs)
                batch.audit.append(AuditRecord("Users", "create", f"user{i}", "ok", scim_id=f"id-{i}", http_status=201))
            store.apply(batch)
        figures["10k_outcomes_batched_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(10_000, 20_000):
            batch = StateBatch()
            batch.upsert_user(
                f"user{i}", key=f"user{i}", scim_id=f"id-{i}", shard=i % 16, attrs={"userName": f"user{i}"}
            )
            batch.audit.append(AuditRecord("Users", "create", f"user{i}", "ok", scim_id=f"id-{i}", http_status=201))
            store.apply(batch)
        figures["10k_outcomes_one_tx_each_s"] = time.perf_counter() - started
        rest = max(0, users - 20_000)
        for start in range(0, rest, 50_000):
            batch = StateBatch()
            for i in range(20_000 + start, 20_000 + min(rest, start + 50_000)):
                batch.upsert_user(
                    f"user{i}",
                    key=f"user{i}",
                    scim_id=f"id-{i}",
                    shard=i % 16,
                    attrs={"userName": f"user{i}", "active": True},
                )
            store.apply(batch)
        started = time.perf_counter()
        frame = store.managed_users(columns=PLAN_USER_COLUMNS)
        figures[f"read_{len(frame)}_managed_for_a_plan_s"] = time.perf_counter() - started
        started = time.perf_counter()
        frame = store.managed_users()
        figures[f"read_{len(frame)}_managed_in_full_s"] = time.perf_counter() - started
    return figures


def run_variant(variant: str, users: int, changed: float) -> dict[str, Any]:
    if variant == "state":
        _reset_peak()
        figures = state_writes(users)
        return {"variant": variant, **figures, "peak_mib": _peak_kib() / 1024}
    roster, managed = make_inputs(users, changed)
    inputs: Any = pandas_inputs(managed) if variant == "pandas" else managed
    del managed
    inputs_kib = _peak_kib()
    _reset_peak()
    resident_kib = _status_kib("VmRSS")
    function = diff_with_pandas if variant == "pandas" else diff_with_dicts
    started = time.perf_counter()
    counts = function(roster, inputs)
    seconds = time.perf_counter() - started
    peak = _peak_kib()
    return {
        "variant": variant,
        "seconds": seconds,
        "peak_mib": max(peak, inputs_kib) / 1024,
        "diff_over_inputs_mib": max(0, peak - resident_kib) / 1024,
        "counts": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--variant", choices=["pandas", "dict", "state"])
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.users, args.changed)))
        return

    results = {}
    for variant in ("pandas", "dict", "state"):
        answer = subprocess.run(
            [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--users",
                str(args.users),
                "--changed",
                str(args.changed),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results[variant] = json.loads(answer.stdout.strip().splitlines()[-1])

    pandas_run, dict_run, state_run = results["pandas"], results["dict"], results["state"]
    print(f"Change sets: {args.users:,} roster users vs {args.users:,} managed, {args.changed:.0%} changed")
    print(f"{'variant':<10}{'seconds':>10}{'peak MiB (process)':>20}{'MiB used by the diff':>22}  ops")
    for run in (pandas_run, dict_run):
        ops = ", ".join(f"{k}={v}" for k, v in sorted(run["counts"].items()))
        figures = f"{run['seconds']:>10.2f}{run['peak_mib']:>20.0f}{run['diff_over_inputs_mib']:>22.0f}"
        print(f"{run['variant']:<10}{figures}  {ops}")
    ratio = dict_run["seconds"] / pandas_run["seconds"]
    same = "same" if pandas_run["counts"] == dict_run["counts"] else "DIFFERENT"
    print(f"pandas is {ratio:.1f}x faster than the dict diff ({same} change counts)")
    targets = [
        ("< 10 s", pandas_run["seconds"] < 10),
        ("< 3 GiB", pandas_run["peak_mib"] * 1024**2 < 3 * GIB),
        (">= 5x the dict diff", ratio >= 5),
    ]
    print("targets: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in targets))
    print()
    print("State store")
    for name, value in state_run.items():
        if name != "variant":
            print(f"  {name:<36}{value:>10.3f}")


if __name__ == "__main__":
    main()
