"""A cycle's outcome as a typed, serializable summary: who changes and how, what was set aside and why.

The command line builds it from the :class:`~scim_pipeline.sync.cycle.CycleReport` of each run it executed (in its
own process) to print who was created, updated, disabled, added or removed, or to print it as JSON — the same typed
figures the step rendered, never numbers re-parsed from metadata. It carries keys (the matching identity) and
attribute *names*, never attribute values, tokens or secrets. It is a report, not a plan: nothing executes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from scim_pipeline.sync.cycle import CycleReport, change_rows

__all__ = ["ChangeRow", "CycleOutcome", "RejectedRow"]

PLAN_COUNTS = (
    ("user_creates", "users created"),
    ("user_updates", "users updated"),
    ("user_enables", "users re-enabled"),
    ("user_disables", "users disabled"),
    ("user_deletes", "users deleted"),
    ("group_creates", "groups created"),
    ("group_renames", "groups renamed"),
    ("group_updates", "groups updated"),
    ("group_releases", "groups released"),
    ("group_deletes", "groups deleted"),
    ("member_adds", "members added"),
    ("member_removes", "members removed"),
)
"""The plan's counts, in the order the CLI prints them, with their labels."""

PAM_COUNTS = (
    ("container_creates", "containers created"),
    ("container_adoptions", "containers adopted"),
    ("permission_adds", "container permissions added"),
    ("permission_deletes", "container permissions deleted"),
    ("permission_adoptions", "container permissions adopted"),
    ("placement_attaches", "privileged data attached"),
    ("placement_detaches", "privileged data detached"),
    ("permissions_deferred", "container permissions deferred"),
    ("access_drift", "containers to fix by hand"),
    ("access_rejected_rows", "rejected access-file rows"),
)
"""The PAM kinds' counts (only when an access file was given), in the order the CLI prints them."""


class ChangeRow(BaseModel):
    kind: str
    op: str
    key: str
    detail: str = ""


class RejectedRow(BaseModel):
    table: str
    file: str = ""
    row: int | None = None
    key: str | None = None
    field: str | None = None
    reason: str


class DeferredRow(BaseModel):
    group: str
    user: str
    reason: str


class DriftRow(BaseModel):
    resource_type: str
    key: str
    attribute: str


class GuardRow(BaseModel):
    name: str
    passed: bool
    message: str
    observed: int = 0
    limit: int = 0


class FailureRow(BaseModel):
    resource_type: str
    op: str
    key: str
    status: int | None = None
    scim_type: str | None = None
    message: str


class CycleOutcome(BaseModel):
    """Everything the CLI prints about one run (and several runs merged)."""

    run_ids: list[str] = Field(default_factory=list)
    dry_run: bool = False
    target: str = ""
    shards: list[int] | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    calls: int = 0
    retries: int = 0
    failed_calls: int = 0
    adoptions: int = 0
    adopted_users: int = 0
    adopted_groups: int = 0
    changes: list[ChangeRow] = Field(default_factory=list)
    rejected: list[RejectedRow] = Field(default_factory=list)
    deferred: list[DeferredRow] = Field(default_factory=list)
    drift: list[DriftRow] = Field(default_factory=list)
    access_drift: list[DriftRow] = Field(default_factory=list)
    """Containers and privileged data to fix by hand (renames, deletions, missing data): never attempted."""
    guards: list[GuardRow] = Field(default_factory=list)
    failures: list[FailureRow] = Field(default_factory=list)
    held: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    budget_deferred: list[ChangeRow] = Field(default_factory=list)
    """User, group and PAM changes the operation budget deferred to the next cycles (memberships: ``deferred``)."""
    on_demand: list[str] = Field(default_factory=list)
    """The step-by-step report of an identity provisioned on demand (its lines)."""
    circuit_message: str | None = None
    stopped: str | None = None
    """Why a run stopped writing midway (its writer lease was lost)."""
    wall_s: float = 0.0

    @property
    def stopped_by_guard(self) -> bool:
        return any(not guard.passed for guard in self.guards)

    @property
    def failed(self) -> bool:
        return self.stopped_by_guard or bool(self.failures) or self.circuit_message is not None or bool(self.stopped)

    @classmethod
    def from_report(cls, report: CycleReport) -> CycleOutcome:
        loaded = report.roster
        rejected: pd.DataFrame = loaded.roster.rejected if loaded is not None else report.rejected
        sources: Mapping[str, str] = loaded.sources if loaded is not None else {}
        plan = report.effective_plan.summary()
        executed = report.executed_memberships.summary()
        counts = {
            "user_creates": plan["user_creates"],
            "user_updates": plan["user_updates"],
            "user_enables": plan["enables"],
            "user_disables": plan["disables"],
            "user_deletes": plan["user_deletes"],
            "group_creates": plan["group_creates"],
            "group_renames": plan["renames"],
            "group_updates": plan["group_updates"],
            "group_releases": plan["group_releases"],
            "group_deletes": plan["group_deletes"],
            "member_adds": executed["member_adds"],
            "member_removes": executed["member_removes"],
            "deferred": len(report.deferred),
            "rejected_rows": len(rejected),
        }
        if report.budget is not None:
            counts["deferred_by_budget"] = report.deferred_by_budget
        pam = report.pam
        access_rejected: list[RejectedRow] = []
        if pam is not None:
            counts.update(pam.counts())
            access_rejected = _rejected_rows(pam.access.rejected, {"access": pam.access.path})
        execution = report.execution
        notes = list(report.notes)
        if report.lease_waited_for:
            notes.append(
                f"waited {report.lease_waited_s:.0f} s for {report.lease_waited_for}, which was writing to this target"
            )
        if report.lease_took_over_from:
            notes.append(
                f"took over the writer lease of {report.lease_took_over_from}, which had stopped renewing it: the "
                "identities it may have been creating were looked up before any create"
            )
        notes.extend(report.skipped.values())
        return cls(
            run_ids=[report.options.run_id],
            dry_run=report.dry_run,
            target=report.target,
            shards=sorted(report.options.shards) if report.options.shards is not None else None,
            counts=counts,
            calls=execution.calls,
            retries=execution.retries,
            failed_calls=len(execution.failures),
            adoptions=execution.adoptions,
            adopted_users=report.adoption.users_adopted if report.adoption else 0,
            adopted_groups=report.adoption.groups_adopted if report.adoption else 0,
            changes=[ChangeRow(**row) for row in change_rows(report)],
            rejected=[*_rejected_rows(rejected, sources or {}), *access_rejected],
            deferred=[
                DeferredRow(group=str(g), user=str(u), reason=str(r))
                for g, u, r in report.deferred[["group", "user", "reason"]].itertuples(index=False)
            ]
            + [
                DeferredRow(group=f"container {c}", user=str(p), reason=str(r))
                for c, p, r in (pam.plan.deferred if pam is not None else [])
            ],
            access_drift=[
                DriftRow(resource_type=t, key=k, attribute=a) for t, k, a in (pam.plan.drift if pam is not None else [])
            ],
            drift=[
                DriftRow(resource_type=str(t), key=str(k), attribute=str(a))
                for t, k, a in report.drift[["resource_type", "key", "attribute"]].itertuples(index=False)
            ],
            guards=[
                GuardRow(name=g.name, passed=g.passed, message=g.message, observed=g.observed, limit=g.limit)
                for g in report.guards
            ],
            failures=[
                FailureRow(
                    resource_type=f.resource_type,
                    op=f.op,
                    key=f.key,
                    status=f.status,
                    scim_type=f.scim_type,
                    message=f.message,
                )
                for f in execution.failures
            ],
            held=[f"{h.resource_type} {h.key}: {h.reason or 'repeated failures'}" for h in execution.held],
            notes=notes,
            budget_deferred=[ChangeRow(**row) for row in report.budget.rows()] if report.budget is not None else [],
            on_demand=report.on_demand.lines() if report.on_demand is not None else [],
            circuit_message=execution.circuit_message,
            stopped=execution.stopped,
            wall_s=round(execution.wall_s, 3),
        )

    @classmethod
    def merged(cls, outcomes: Sequence[CycleOutcome]) -> CycleOutcome:
        """Several runs of one CLI command (one per contiguous shard range) as one outcome."""
        if len(outcomes) == 1:
            return outcomes[0]
        merged = cls(dry_run=all(o.dry_run for o in outcomes), target=outcomes[0].target if outcomes else "")
        for outcome in outcomes:
            merged.run_ids.extend(outcome.run_ids)
            for name, value in outcome.counts.items():
                # The roster is read whole by every run: its rejected rows are the same each time.
                merged.counts[name] = value if name == "rejected_rows" else merged.counts.get(name, 0) + value
            merged.calls += outcome.calls
            merged.retries += outcome.retries
            merged.failed_calls += outcome.failed_calls
            merged.adoptions += outcome.adoptions
            merged.adopted_users += outcome.adopted_users
            merged.adopted_groups += outcome.adopted_groups
            merged.changes.extend(outcome.changes)
            merged.deferred.extend(outcome.deferred)
            merged.drift.extend(outcome.drift)
            merged.access_drift.extend(outcome.access_drift)
            merged.guards.extend(g for g in outcome.guards if not g.passed)
            merged.failures.extend(outcome.failures)
            merged.held.extend(outcome.held)
            merged.budget_deferred.extend(outcome.budget_deferred)
            merged.on_demand.extend(outcome.on_demand)
            merged.notes.extend(n for n in outcome.notes if n not in merged.notes)
            merged.circuit_message = merged.circuit_message or outcome.circuit_message
            merged.stopped = merged.stopped or outcome.stopped
            merged.wall_s += outcome.wall_s
            merged.shards = sorted({*(merged.shards or []), *(outcome.shards or [])})
        merged.rejected = outcomes[0].rejected if outcomes else []
        return merged


def _rejected_rows(rejected: pd.DataFrame, sources: Mapping[str, str]) -> list[RejectedRow]:
    if rejected.empty:
        return []
    rows: list[RejectedRow] = []
    for record in rejected.to_dict("records"):
        table = str(record.get("table") or "")
        rows.append(
            RejectedRow(
                table=table,
                file=sources.get(table, ""),
                row=_int(record.get("row")),
                key=_text(record.get("key")),
                field=_text(record.get("field")),
                reason=str(record.get("reason") or ""),
            )
        )
    return rows


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    text = _text(value)
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None
