"""A cycle's report as the data each asset holds: rows a person can read in the UI (who, what, why; each call and
its outcome), numeric counts the UI plots, and — for the per-identity assets — each shard's own rows and counts, so
partitions add up to the run."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from scim_pipeline.sync.cycle import CycleReport, change_detail
from scim_pipeline.sync.plan.budget import BUDGET_REASON
from scim_pipeline.sync.plan.sharding import stable_shard

__all__ = ["ROWS_SHOWN", "CycleView", "rows_table"]

_EMPTY = pd.DataFrame()
_EMPTY_CALLS = pd.DataFrame(columns=["outcome"])


def _split(frame: pd.DataFrame, shards: pd.Series) -> dict[int, pd.DataFrame]:
    """``frame``'s rows by shard, split once for every partition of the run."""
    if frame.empty:
        return {}
    return {int(str(shard)): part for shard, part in frame.groupby(shards.to_numpy(), sort=False)}


ROWS_SHOWN = 100
"""Rows shown per table (per partition for the per-identity assets); the counts always cover every row."""

_OUTCOMES = ("ok", "adopted", "already_done", "failed", "skipped", "held")


def rows_table(frame: pd.DataFrame, columns: Sequence[str], *, limit: int = ROWS_SHOWN) -> MetadataValue:
    """The first ``limit`` rows of ``frame`` as a table the UI shows (cells as text, numbers as numbers)."""
    shown = frame.reindex(columns=list(columns)).head(limit)
    records = [
        TableRecord({name: _cell(value) for name, value in zip(columns, row, strict=True)})
        for row in shown.itertuples(index=False)
    ]
    kinds = {name: _column_type(frame[name]) if name in frame.columns else "string" for name in columns}
    return MetadataValue.table(
        records, schema=TableSchema(columns=[TableColumn(name, kinds[name]) for name in columns])
    )


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(series.dtype):
        return "int"
    if pd.api.types.is_float_dtype(series.dtype):
        return "float"
    return "string"


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, bool | int | float):
        return value
    if hasattr(value, "item"):  # numpy scalars
        item = value.item()
        if isinstance(item, bool | int | float):
            return item
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _shown(total: int, limit: int = ROWS_SHOWN) -> dict[str, Any]:
    return {"rows_shown": min(total, limit)} if total > limit else {}


@dataclass
class CycleView:
    """The report cut to what each asset holds. ``shards``: the shards this run covered (every shard when whole)."""

    report: CycleReport
    shard_count: int
    shards: Sequence[int]

    def __post_init__(self) -> None:
        roster = self.report.roster.roster if self.report.roster is not None else None
        self._roster = roster
        users = self.report.plan.users
        changed = users[~users["op"].eq("refresh")] if len(users) else users
        self._user_changes = (
            changed.assign(
                detail=[
                    change_detail(str(o), p, r)
                    for o, p, r in zip(changed["op"], changed["payload"], changed["reason"], strict=True)
                ]
            )
            if len(changed)
            else changed.assign(detail=pd.Series(dtype="string"))
        )
        self._member_changes = self._explode_memberships()
        self._member_outcomes = self._explode_outcomes()
        self._key_norms = self._key_norm_index()

    # ---- shards ------------------------------------------------------------------------------------------

    def shard_of(self, key_norms: Iterable[str]) -> pd.Series:
        keys = pd.Series(list(key_norms), dtype="string")
        if keys.empty:
            return pd.Series([], dtype="int64")
        return stable_shard(keys, self.shard_count)

    def _key_norm_index(self) -> dict[str, str]:
        """Matching key → key_norm of every user the plan or roster knows (audit rows carry the key only)."""
        index: dict[str, str] = {}
        for frame in (self._roster.users if self._roster is not None else None, self.report.plan.users):
            if frame is not None and len(frame):
                index.update(zip(frame["key"].astype(str), frame["key_norm"].astype(str), strict=True))
        return index

    def _user_shards_of_keys(self, keys: pd.Series) -> pd.Series:
        norms = [self._key_norms.get(str(key), str(key).casefold()) for key in keys]
        return self.shard_of(norms).set_axis(keys.index)

    def _explode_memberships(self) -> pd.DataFrame:
        rows: list[tuple[str, str, str]] = []
        memberships = self.report.executed_memberships.memberships
        for op, group, members in memberships[["op", "key", "member_key_norms"]].itertuples(index=False):
            verb = "add" if op == "add_members" else "remove"
            for member in json.loads(str(members)) if isinstance(members, str) and members else []:
                rows.append((verb, str(group), str(member)))
        frame = pd.DataFrame(rows, columns=["op", "group", "user_key_norm"])
        frame["shard"] = self.shard_of(frame["user_key_norm"]).to_numpy()
        return frame

    def _explode_outcomes(self) -> pd.DataFrame:
        groups = self.report.roster.roster.groups if self.report.roster is not None else pd.DataFrame()
        names = dict(zip(groups["key_norm"].astype(str), groups["key"].astype(str), strict=True)) if len(groups) else {}
        rows = [
            ("add" if op == "add_members" else "remove", names.get(group, group), member, outcome)
            for op, group, members, outcome in self.report.execution.member_outcomes
            for member in members
        ]
        frame = pd.DataFrame(rows, columns=["op", "group", "user_key_norm", "outcome"])
        frame["shard"] = self.shard_of(frame["user_key_norm"]).to_numpy()
        return frame

    def _user_key(self, key_norms: pd.Series) -> pd.Series:
        known = {norm: key for key, norm in self._key_norms.items()}
        return key_norms.map(lambda norm: known.get(str(norm), str(norm)))

    # ---- the roster ------------------------------------------------------------------------------------

    @functools.cached_property
    def _users_by_shard(self) -> dict[int, pd.DataFrame]:
        users = self._roster.users if self._roster is not None else pd.DataFrame(columns=["shard"])
        return _split(users, users["shard"])

    @functools.cached_property
    def _memberships_by_shard(self) -> dict[int, pd.DataFrame]:
        roster = self._roster
        if roster is None:
            return {}
        memberships = roster.memberships
        groups = dict(zip(roster.groups["key_norm"].astype(str), roster.groups["key"].astype(str), strict=True))
        view = pd.DataFrame(
            {
                "user": self._user_key(memberships["user_key_norm"].astype(str)).to_numpy(),
                "group": memberships["group_key_norm"].astype(str).map(lambda g: groups.get(g, g)).to_numpy(),
            }
        )
        return _split(view, self.shard_of(memberships["user_key_norm"].astype(str)))

    @functools.cached_property
    def _deferred_by_shard(self) -> dict[int, pd.DataFrame]:
        deferred = self.report.deferred
        return _split(deferred, self._user_shards_of_keys(deferred["user"].astype(str))) if len(deferred) else {}

    @functools.cached_property
    def _user_calls_by_shard(self) -> dict[int, pd.DataFrame]:
        rows = self._audit("Users")
        return _split(rows, self._user_shards_of_keys(rows["key"].astype(str))) if len(rows) else {}

    def idp_users(self, shard: int) -> dict[str, Any]:
        mine = self._users_by_shard.get(shard, _EMPTY)
        active = (
            mine["active"].astype("boolean").fillna(True)
            if "active" in mine.columns
            else pd.Series([], dtype="boolean")
        )
        return {
            "dagster/row_count": len(mine),
            "active": int(active.sum()),
            "inactive": int((~active).sum()),
            "users": rows_table(mine, ["key", "displayName", "active", "row"]),
            **_shown(len(mine)),
        }

    def idp_groups(self) -> dict[str, Any]:
        roster = self._roster
        if roster is None:
            return {"dagster/row_count": 0}
        counts = roster.memberships.groupby("group_key_norm").size()
        groups = roster.groups.assign(members=roster.groups["key_norm"].map(counts).fillna(0).astype(int))
        return {
            "dagster/row_count": len(groups),
            "groups": rows_table(groups, ["key", "displayName", "members", "row"]),
            **_shown(len(groups)),
        }

    def idp_memberships(self, shard: int) -> dict[str, Any]:
        view = self._memberships_by_shard.get(shard, pd.DataFrame(columns=["user", "group"]))
        return {"dagster/row_count": len(view), "memberships": rows_table(view, ["user", "group"]), **_shown(len(view))}

    def roster_rejections(self) -> dict[str, Any]:
        rejected = self._roster.rejected if self._roster is not None else pd.DataFrame()
        sources = self.report.roster.sources if self.report.roster is not None else {}
        frame = (
            rejected.assign(file=rejected["table"].map(lambda t: sources.get(str(t), str(t))))
            if len(rejected)
            else rejected
        )
        counts = {
            f"rejected_{table}": int((rejected["table"] == table).sum()) if len(rejected) else 0
            for table in ("users", "groups", "memberships")
        }
        return {
            "dagster/row_count": len(rejected),
            **counts,
            "rejected": rows_table(frame, ["table", "file", "row", "key", "field", "reason"]),
            **_shown(len(rejected)),
        }

    def roster_read(self) -> dict[str, Any]:
        """How the source was read by this cycle (an observation of the roster files)."""
        loaded = self.report.roster
        if loaded is None:
            return {}
        metadata: dict[str, Any] = {"source": loaded.description}
        for name, value in loaded.read.items():
            if value is None or name == "source":
                continue
            label = name if name.startswith("read_") else f"read_{name}"
            metadata[label] = value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
        return metadata

    def desired_access(self) -> dict[str, Any]:
        pam = self.report.pam
        if pam is None:
            return {}
        access = pam.access
        permissions = pd.DataFrame(
            [
                {
                    "container": p.container,
                    "principal_type": p.principal_type,
                    "principal": p.principal,
                    "rights": ", ".join(sorted(p.rights)),
                }
                for p in access.permissions
            ],
            columns=["container", "principal_type", "principal", "rights"],
        )
        rejected = access.rejected
        return {
            "dagster/row_count": len(permissions),
            "containers": len(access.containers),
            "permissions": len(permissions),
            "placements": len(access.placements),
            "rejected_rows": len(rejected),
            "access_file": str(access.path),
            "rights": rows_table(permissions, list(permissions.columns)),
            **({"rejected": rows_table(rejected, ["row", "key", "field", "reason"])} if len(rejected) else {}),
        }

    # ---- change sets -------------------------------------------------------------------------------------

    def user_changes(self, shard: int) -> dict[str, Any]:
        changes = self._user_changes
        mine = changes[changes["shard"].eq(shard)] if len(changes) else changes
        ops = mine["op"].value_counts() if len(mine) else pd.Series(dtype=int)
        counts = {f"{op}s": int(ops.get(op, 0)) for op in ("create", "update", "enable", "disable", "delete")}
        counts["lookups"] = int(ops.get("resolve", 0))
        metadata: dict[str, Any] = {
            "dagster/row_count": len(mine),
            **counts,
            "changes": rows_table(mine, ["key", "op", "detail"]),
            **_shown(len(mine)),
            "executed": self.executed,
        }
        budget = self.report.budget
        if budget is not None:
            waiting = budget.users[budget.users["shard"].eq(shard)] if len(budget.users) else budget.users
            metadata.update(self._budget_rows(waiting))
        on_demand = self.report.on_demand
        own_shard = self.shard_of([self._key_norms.get(on_demand.user, on_demand.user)]) if on_demand else None
        if on_demand is not None and own_shard is not None and int(own_shard.iloc[0]) == shard:
            metadata["provisioned_on_demand"] = MetadataValue.md(_code_block(on_demand.lines()))
        return metadata

    @staticmethod
    def _budget_rows(waiting: pd.DataFrame) -> dict[str, Any]:
        """The changes the operation budget deferred to the next cycles, with its reason."""
        view = (
            waiting.assign(detail=BUDGET_REASON)
            if len(waiting)
            else pd.DataFrame(columns=["key", "op", "detail"], dtype="string")
        )
        return {
            "deferred_by_budget": len(view),
            **({"deferred": rows_table(view, ["key", "op", "detail"])} if len(view) else {}),
        }

    def group_changes(self) -> dict[str, Any]:
        groups = self.report.plan.groups
        changed = groups[~groups["op"].eq("refresh")] if len(groups) else groups
        changed = (
            changed.assign(
                detail=[
                    change_detail(str(o), p, r)
                    for o, p, r in zip(changed["op"], changed["payload"], changed["reason"], strict=True)
                ]
            )
            if len(changed)
            else changed.assign(detail=pd.Series(dtype="string"))
        )
        ops = changed["op"].value_counts() if len(changed) else pd.Series(dtype=int)
        counts = {f"{op}s": int(ops.get(op, 0)) for op in ("create", "rename", "update", "release", "delete")}
        budget = self.report.budget
        return {
            "dagster/row_count": len(changed),
            **counts,
            "changes": rows_table(changed, ["key", "op", "detail"]),
            **_shown(len(changed)),
            "executed": self.executed,
            **(self._budget_rows(budget.groups) if budget is not None else {}),
        }

    def membership_changes(self, shard: int) -> dict[str, Any]:
        changes = self._member_changes
        mine = changes[changes["shard"].eq(shard)]
        view = mine.assign(user=self._user_key(mine["user_key_norm"]))
        deferred = self._deferred_by_shard.get(shard, _EMPTY)
        metadata: dict[str, Any] = {
            "dagster/row_count": len(view),
            "member_adds": int(view["op"].eq("add").sum()),
            "member_removes": int(view["op"].eq("remove").sum()),
            "deferred": len(deferred),
            **(
                {
                    "deferred_by_budget": int(deferred["reason"].astype(str).str.startswith(BUDGET_REASON).sum())
                    if len(deferred)
                    else 0
                }
                if self.report.budget is not None
                else {}
            ),
            "changes": rows_table(view, ["user", "op", "group"]),
            **_shown(len(view)),
            "executed": self.executed,
        }
        if len(deferred):
            metadata["deferred_memberships"] = rows_table(deferred, ["user", "group", "reason"])
        return metadata

    def pam_changes(self, kind: str) -> dict[str, Any]:
        pam = self.report.pam
        if pam is None:
            return {}
        rows = pd.DataFrame(
            [row for row in pam.change_rows() if row["kind"] == kind], columns=["kind", "op", "key", "detail"]
        )
        counts = rows["op"].value_counts()
        metadata: dict[str, Any] = {
            "dagster/row_count": len(rows),
            **{f"{op}s": int(n) for op, n in counts.items()},
            "changes": rows_table(rows, ["key", "op", "detail"]),
            "executed": self.executed,
        }
        if kind == "container" and pam.plan.drift:
            drift = pd.DataFrame(pam.plan.drift, columns=["resource_type", "key", "to_fix_by_hand"])
            metadata["drift"] = rows_table(drift, list(drift.columns))
        if kind == "permission" and pam.plan.deferred:
            deferred = pd.DataFrame(pam.plan.deferred, columns=["container", "principal", "reason"])
            metadata["deferred"] = rows_table(deferred, list(deferred.columns))
        return metadata

    # ---- provisioning ------------------------------------------------------------------------------------

    @property
    def executed(self) -> bool:
        return not (self.report.dry_run or self.report.stopped_by_guard)

    def _calls(self, rows: pd.DataFrame) -> dict[str, Any]:
        outcomes = rows["outcome"].value_counts() if len(rows) else pd.Series(dtype=int)
        return {
            "dagster/row_count": len(rows),
            "calls": len(rows),
            **{f"outcome_{name}": int(outcomes.get(name, 0)) for name in _OUTCOMES},
            "failed": int(outcomes.get("failed", 0)),
            "calls_made": rows_table(rows, ["at", "operation", "key", "outcome", "http_status", "latency_ms", "error"]),
            **_shown(len(rows)),
        }

    def _audit(self, resource_type: str | None = None) -> pd.DataFrame:
        audit = self.report.audit
        if audit.empty:
            return audit
        members = audit["operation"].isin(["add_members", "remove_members"])
        rows = audit[~members] if resource_type is not None else audit
        if resource_type is not None:
            rows = rows[rows["resource_type"] == resource_type]
        return rows.assign(at=pd.to_datetime(rows["at"], unit="s", utc=True).dt.strftime("%H:%M:%S.%f").str[:-3])

    def user_provisioning(self, shard: int) -> dict[str, Any]:
        return self._calls(self._user_calls_by_shard.get(shard, _EMPTY_CALLS))

    def group_provisioning(self) -> dict[str, Any]:
        return self._calls(self._audit("Groups"))

    def pam_provisioning(self, resource_type: str) -> dict[str, Any]:
        return self._calls(self._audit(resource_type))

    def membership_provisioning(self, shard: int) -> dict[str, Any]:
        outcomes = self._member_outcomes
        mine = outcomes[outcomes["shard"].eq(shard)]
        view = mine.assign(user=self._user_key(mine["user_key_norm"]))
        counted = view["outcome"].value_counts()
        return {
            "dagster/row_count": len(view),
            "member_changes": len(view),
            **{f"outcome_{name}": int(counted.get(name, 0)) for name in _OUTCOMES},
            "failed": int(counted.get("failed", 0)),
            "member_outcomes": rows_table(view, ["user", "op", "group", "outcome"]),
            **_shown(len(view)),
        }

    def provisioning_audit(self) -> dict[str, Any]:
        report = self.report
        rows = self._audit()
        execution = report.execution
        metadata = self._calls(rows)
        metadata["calls_made"] = rows_table(
            rows, ["at", "resource_type", "operation", "key", "outcome", "http_status", "latency_ms", "error"]
        )
        metadata.update(
            {
                "retries": execution.retries,
                "wall_s": round(execution.wall_s, 3),
                "target": report.target,
            }
        )
        if report.adoption is not None:
            metadata["adopted_users"] = report.adoption.users_adopted
            metadata["adopted_groups"] = report.adoption.groups_adopted
        if report.stopped:
            metadata["stopped"] = report.stopped
        if report.lease_took_over_from:
            metadata["took_over_lease_of"] = report.lease_took_over_from
        if report.budget is not None:
            metadata["operation_budget"] = report.budget.limit
            metadata["deferred_by_budget"] = report.deferred_by_budget
        if report.on_demand is not None:
            metadata["provisioned_on_demand"] = MetadataValue.md(_code_block(report.on_demand.lines()))
        return metadata

    def access_snapshot(self) -> dict[str, Any]:
        pam = self.report.pam
        if pam is None:
            return {}
        snapshot: pd.DataFrame = pam.access_snapshot
        drift: pd.DataFrame = pam.access_drift
        managed = snapshot["managed"].astype(bool) if len(snapshot) else pd.Series([], dtype=bool)
        principals = snapshot[["container_id", "principal_type", "principal_id"]].drop_duplicates()
        return {
            "dagster/row_count": len(snapshot),
            "containers": int(snapshot["container_id"].nunique()) if len(snapshot) else 0,
            "permissions": len(principals),
            "rights": len(snapshot),
            "managed_rights": int(managed.sum()),
            "unmanaged_rights": int((~managed).sum()),
            "privileged_data": len(pam.placement_snapshot),
            "drift": len(drift),
            "read_s": round(pam.read_s, 3),
            "read_requests": pam.target.requests,
            "holdings": rows_table(snapshot, ["container", "principal_type", "principal", "right", "managed"]),
            **({"drift_rows": rows_table(drift, list(drift.columns))} if len(drift) else {}),
        }


def _code_block(lines: Sequence[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```"


def merge_counts(per_shard: Mapping[int, Mapping[str, Any]], name: str) -> int:
    """The sum of a count over the shards (what the run as a whole did)."""
    return sum(int(metadata.get(name, 0)) for metadata in per_shard.values())
