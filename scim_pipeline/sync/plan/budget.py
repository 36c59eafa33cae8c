"""The operation budget (``SCIM_MAX_OPERATIONS_PER_CYCLE``): onboarding over successive cycles.

A cycle with a budget of N sends at most N write requests, chosen in a fixed priority — group creates, user creates,
updates (groups' then users'), membership PATCHes, Delinea's container and permission writes, deprovisions last —
and in plan order within each stage, so the next cycle continues exactly where this one stopped (what was written
is no longer in its plan). Everything else is *deferred*: shown in the plan, the sync summary and the change-set
assets with :data:`BUDGET_REASON`, and planned again by the next cycle. A budget paces the writes; it never changes
what the roster asks for, so the guards judge the whole plan (see :mod:`scim_pipeline.sync.cycle`).

State-only changes cost nothing and are never deferred (``refresh``, a ``resolve`` look-up, Delinea's ``adopt`` /
``forget``), except a group ``release``: it forgets the members we added, so it waits while any removal of those
members waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BUDGET_REASON",
    "CREATES",
    "DEPROVISIONS",
    "UPDATES",
    "BudgetReport",
    "OperationBudget",
    "PlanSplit",
    "stage_of",
]

BUDGET_REASON = "deferred by the operation budget"
"""Why a change was not written in this cycle when the budget ran out (the next cycle continues)."""

CREATES, UPDATES, DEPROVISIONS = 1, 2, 5
FREE = -1
USER_STAGES = {"create": CREATES, "update": UPDATES, "enable": UPDATES, "disable": DEPROVISIONS, "delete": DEPROVISIONS}
GROUP_STAGES = {"create": CREATES, "rename": UPDATES, "update": UPDATES, "delete": DEPROVISIONS}
PAM_WRITE_OPS = frozenset({"create", "add", "delete", "attach", "detach"})
"""Delinea's PAM ops that send a request (``adopt`` and ``forget`` only record state)."""


def stage_of(frame: pd.DataFrame, stages: dict[str, int]) -> np.ndarray[Any, Any]:
    """Each change's stage (``FREE`` for state-only ones)."""
    return np.array([stages.get(str(op), FREE) for op in frame["op"]], dtype=np.int64)


@dataclass
class OperationBudget:
    """The writes one cycle may still send. ``limit=None``: no budget (everything is kept)."""

    limit: int | None
    used: int = 0

    @property
    def limited(self) -> bool:
        return self.limit is not None

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)

    def take(
        self, frame: pd.DataFrame, *, costly: Sequence[bool] | None = None, units: Iterable[Any] | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split ``frame`` into the rows this cycle writes and those it defers, in row order.

        ``costly``: which rows send a request (default: all). ``units``: rows sharing a unit are kept or deferred
        together (a permission's delete and re-add); a unit that does not fit defers every later unit too, so
        the order stays stable."""
        if self.limit is None or frame.empty:
            return frame, frame.iloc[0:0]
        cost = np.ones(len(frame), dtype=np.int64) if costly is None else np.asarray(costly, dtype=np.int64)
        unit_codes = np.arange(len(frame)) if units is None else pd.factorize(pd.Series(list(units), dtype=object))[0]
        unit_cost = np.bincount(unit_codes, weights=cost).astype(np.int64)
        order = pd.unique(unit_codes)  # units in the order of their first row
        cumulative = np.cumsum(unit_cost[order])
        fits_in_order = cumulative <= (self.remaining or 0)
        # Stable: once a unit does not fit, every later costly unit waits too.
        first_miss = int(np.argmin(fits_in_order)) if not fits_in_order.all() else len(order)
        kept_units = np.zeros(len(unit_cost), dtype=bool)
        kept_units[order[:first_miss]] = True
        kept_units[unit_cost == 0] = True
        keep = kept_units[unit_codes]
        self.used += int(cost[keep].sum())
        return frame[keep], frame[~keep]


@dataclass
class BudgetReport:
    """What the operation budget let through in one cycle and what it deferred."""

    limit: int
    allotted: int = 0
    """Writes this cycle sends (or, in a dry run, would send)."""
    users: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Deferred user changes (change-set rows)."""
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Deferred group changes (change-set rows)."""
    memberships: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"group": [], "user": [], "op": []}, dtype="string")
    )
    """Deferred membership changes, one row per member: group, user, op (add / remove)."""
    pam: list[tuple[str, str, str]] = field(default_factory=list)
    """Deferred Delinea changes: (kind, op, key)."""

    @property
    def deferred(self) -> int:
        """Changes this budget cut (each membership counted per member); the memberships of a user or group whose
        create it deferred wait too, counted by ``CycleReport.deferred_by_budget``."""
        return len(self.users) + len(self.groups) + len(self.memberships) + len(self.pam)

    def rows(self) -> list[dict[str, str]]:
        """One row per deferred user, group or PAM change: kind, op, key, detail (never a value). The deferred
        memberships are listed with the cycle's other deferred memberships (``CycleReport.deferred``)."""
        rows: list[dict[str, str]] = []
        for kind, frame in (("user", self.users), ("group", self.groups)):
            if len(frame):
                rows.extend(
                    {"kind": kind, "op": str(op), "key": str(key), "detail": BUDGET_REASON}
                    for op, key in frame[["op", "key"]].itertuples(index=False)
                )
        rows.extend({"kind": kind, "op": op, "key": key, "detail": BUDGET_REASON} for kind, op, key in self.pam)
        return rows

    def note(self, deferred: int | None = None) -> str:
        """One line for the notes of the plan and the sync summary (``deferred``: the changes waiting in all,
        default those this budget cut)."""
        waiting = self.deferred if deferred is None else deferred
        return (
            f"operation budget (SCIM_MAX_OPERATIONS_PER_CYCLE={self.limit:,}): {self.allotted:,} write(s) in this "
            f"cycle, {waiting:,} change(s) {BUDGET_REASON} — the next cycle continues"
            if waiting
            else f"operation budget (SCIM_MAX_OPERATIONS_PER_CYCLE={self.limit:,}): {self.allotted:,} write(s), "
            "nothing deferred"
        )


class PlanSplit:
    """A cycle's user and group changes split by the budget, stage by stage: the upserts first (group creates, user
    creates, groups' then users' updates), the deprovisions once the memberships and the PAM kinds had their share.
    State-only changes are always kept; a group release waits while the removal of its members does."""

    def __init__(self, users: pd.DataFrame, groups: pd.DataFrame) -> None:
        self.users, self.groups = users, groups
        self._user_stage = stage_of(users, USER_STAGES)
        self._group_stage = stage_of(groups, GROUP_STAGES)
        releases = groups["op"].eq("release").to_numpy(dtype=bool)
        self._releases = groups[releases]
        self._kept: dict[str, list[pd.DataFrame]] = {
            "users": [users[self._user_stage == FREE]],
            "groups": [groups[(self._group_stage == FREE) & ~releases]],
        }
        self._deferred: dict[str, list[pd.DataFrame]] = {"users": [users.iloc[0:0]], "groups": [groups.iloc[0:0]]}

    def _take(self, budget: OperationBudget, table: str, stage: int) -> None:
        frame, stages = (self.users, self._user_stage) if table == "users" else (self.groups, self._group_stage)
        kept, deferred = budget.take(frame[stages == stage])
        self._kept[table].append(kept)
        self._deferred[table].append(deferred)

    def take_upserts(self, budget: OperationBudget) -> None:
        for stage in (CREATES, UPDATES):
            self._take(budget, "groups", stage)
            self._take(budget, "users", stage)

    def take_deprovisions(self, budget: OperationBudget, blocked_releases: set[str]) -> None:
        """Users' disables and deletes, then groups' deletes; releases unless their member removals wait."""
        self._take(budget, "users", DEPROVISIONS)
        self._take(budget, "groups", DEPROVISIONS)
        waits = self._releases["key_norm"].astype(str).isin(blocked_releases).to_numpy(dtype=bool)
        self._kept["groups"].append(self._releases[~waits])
        self._deferred["groups"].append(self._releases[waits])

    def upserts(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The user and group changes kept so far."""
        return _joined(self._kept["users"]), _joined(self._kept["groups"])

    def waiting_creates(self) -> dict[str, set[str]]:
        """The keys of the users and groups whose create was deferred (their memberships wait for it)."""
        waiting: dict[str, set[str]] = {}
        for table in ("users", "groups"):
            deferred = _joined(self._deferred[table])
            waiting[table] = set(deferred.loc[deferred["op"].eq("create"), "key"].astype(str))
        return waiting

    def result(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Kept users, kept groups, deferred users, deferred groups."""
        return (
            _joined(self._kept["users"]),
            _joined(self._kept["groups"]),
            _joined(self._deferred["users"]),
            _joined(self._deferred["groups"]),
        )


def _joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    present = [frame for frame in frames if len(frame)]
    if not present:
        return frames[0].iloc[0:0]
    return present[0] if len(present) == 1 else pd.concat(present, ignore_index=True)
