"""The executor: turns a change set into individual SCIM calls and records every outcome.

Order: group creates/renames/updates → users → memberships → group deprovisioning (after their members were
removed). Delinea's PAM kinds (a :class:`PamChangeSet`: containers → permissions, deletes before adds → privileged
data placements) go through the same pool, breaker, escrow, audit and batches. Calls run concurrently through a
bounded pool of workers (the client's own concurrency and rate limit still apply), so memory stays flat however
large the change set. Every outcome updates the state store and the
audit trail in small batches (≤ 200 outcomes or ~50 ms); a ``pending_create`` marker is committed before any
POST, so a crash at any point is resumed by looking the identity up instead of creating it twice.

A failure of one identity never stops the others. A circuit breaker stops scheduling new calls when the target
fails most of them; identities that failed several cycles in a row are held back (escrow) with their reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from scim_pipeline.scim.client import ScimClient, ScimResult
from scim_pipeline.scim.errors import (
    AuthenticationError,
    CredentialsRefused,
    ScimForbidden,
    ScimHTTPError,
    ScimNotFound,
    ScimPipelineError,
    ScimRateLimited,
    ScimServerError,
    ScimTransportError,
)
from scim_pipeline.sync.plan.changes import ChangeSet
from scim_pipeline.sync.plan.payloads import ENTERPRISE_USER_SCHEMA, MANAGER_PATH, resource_attrs
from scim_pipeline.sync.state import UNKNOWN_HASH, AuditRecord, EscrowPolicy, LeaseLost, ProvisioningState, StateBatch
from scim_pipeline.sync.state.batch import PermissionRecord

__all__ = [
    "CircuitBreaker",
    "ConfirmCallback",
    "ExecutionReport",
    "Failure",
    "ForbiddenStop",
    "Held",
    "PamChangeSet",
    "ProgressCallback",
    "execute",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each executed change."""

_FLUSH_SIZE = 200
_FLUSH_INTERVAL_S = 0.05
_OBSERVED_USER_PATHS = ("userName", "externalId", "displayName", "active")
_OBSERVED_GROUP_PATHS = ("displayName", "externalId")
_GROUP_UPSERT_OPS = frozenset({"create", "rename", "update", "resolve", "refresh"})
_GROUP_REMOVAL_OPS = frozenset({"release", "delete"})
_PAM_STATE_ONLY_OPS = frozenset({"adopt", "forget"})


class CircuitBreaker:
    """Opens when, after at least ``min_calls`` calls, more than ``max_failure_share`` of them failed with a
    server or transport error (the target is down or overloaded), as Entra's quarantine does above 40 %."""

    def __init__(self, *, min_calls: int = 20, max_failure_share: float = 0.4) -> None:
        self.min_calls = min_calls
        self.max_failure_share = max_failure_share
        self.calls = 0
        self.failures = 0
        self.is_open = False
        self.stop_message: str | None = None
        """Why the cycle was stopped outright (the writer lease was lost), as opposed to opened by failures."""

    def stop(self, reason: str) -> None:
        """Stop scheduling calls for good, for a reason other than the target failing (e.g. a lost lease)."""
        self.is_open = True
        self.stop_message = self.stop_message or reason

    def record(self, *, target_failure: bool) -> None:
        self.calls += 1
        self.failures += int(target_failure)
        if self.calls >= self.min_calls and self.failures > self.max_failure_share * self.calls:
            self.is_open = True

    @property
    def message(self) -> str:
        if self.stop_message is not None:
            return self.stop_message
        return (
            f"circuit open: {self.failures} of {self.calls} calls failed (target down?) — stopped early; "
            "the next cycle retries"
        )


@dataclass(frozen=True)
class Failure:
    """One identity whose change failed (``message`` carries no secret and no attribute value)."""

    resource_type: str
    op: str
    key: str
    status: int | None
    scim_type: str | None
    message: str


@dataclass(frozen=True)
class Held:
    """An identity held back by escrow: it failed repeatedly and waits until ``until`` (epoch seconds)."""

    resource_type: str
    op: str
    key: str
    reason: str | None
    until: float


@dataclass
class ForbiddenStop:
    """The first 403 of a cycle's PAM requests (Delinea: the service account lacks Owner on containers): reported
    once, with ``fix``, and every PAM request after it is not sent; never retried. One per cycle, shared by the plan's
    reads and the executor's calls."""

    fix: str
    failure: Failure | None = None

    @property
    def tripped(self) -> bool:
        return self.failure is not None

    def trip(self, resource_type: str, op: str, key: str, error: ScimForbidden) -> Failure | None:
        """Record a 403: its failure (message: ``fix``) the first time, None once already stopped."""
        if self.failure is not None:
            return None
        self.failure = Failure(resource_type, op, key, 403, error.scim_type, self.fix)
        return self.failure


ConfirmCallback = Callable[[Any, ScimResult], None]
"""Called as ``confirmed(row, result)`` after each PAM call the target confirmed (``row``: its change-set row)."""


@dataclass(frozen=True)
class PamChangeSet:
    """Delinea's PAM changes ready to send: the frames of :mod:`scim_pipeline.sync.pam.plan` (which documents their
    columns), their container and principal ids resolved, ``key_norm`` the escrow key of each row.

    ``stop`` is the cycle's :class:`ForbiddenStop`; ``confirmed`` hears of each confirmed call (the access snapshot
    is the cycle's read plus these answers)."""

    containers: pd.DataFrame
    permissions: pd.DataFrame
    placements: pd.DataFrame
    stop: ForbiddenStop
    confirmed: ConfirmCallback | None = None

    def __len__(self) -> int:
        return len(self.containers) + len(self.permissions) + len(self.placements)

    @property
    def is_empty(self) -> bool:
        return len(self) == 0


DONE_OUTCOMES = frozenset({"ok", "adopted", "already_done"})
"""The outcomes of a change that took effect on the target."""


@dataclass
class ExecutionReport:
    """What an execution did. ``failed`` is true when any change failed or the circuit opened."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(resource_type, op, outcome) → number of changes."""
    failures: list[Failure] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    calls: int = 0
    retries: int = 0
    adoptions: int = 0
    not_attempted: int = 0
    wall_s: float = 0.0
    circuit_open: bool = False
    circuit_message: str | None = None
    stopped: str | None = None
    """Why the execution stopped before its end for a reason other than failures (the writer lease was lost)."""
    member_outcomes: list[tuple[str, str, tuple[str, ...], str]] = field(default_factory=list)
    """One entry per group PATCH sent: (op, group key_norm, the members' key_norms, outcome)."""
    done: set[tuple[str, str, str]] = field(default_factory=set)
    """(resource_type, op, key) of every user and group change that took effect (ok, adopted or already done): what a
    run that stopped midway really did."""

    @property
    def failed(self) -> bool:
        return bool(self.failures) or self.circuit_open or self.stopped is not None

    def count(self, *, resource_type: str | None = None, op: str | None = None, outcome: str | None = None) -> int:
        """How many changes match the given resource type / op / outcome (None = any)."""
        return sum(
            n
            for (rt, o, out), n in self.counts.items()
            if (resource_type is None or rt == resource_type)
            and (op is None or o == op)
            and (outcome is None or out == outcome)
        )

    def merge(self, other: ExecutionReport) -> ExecutionReport:
        """Combine two reports (e.g. the phases of one cycle)."""
        merged = ExecutionReport(
            counts=self.counts + other.counts,
            failures=[*self.failures, *other.failures],
            held=[*self.held, *other.held],
            calls=self.calls + other.calls,
            retries=self.retries + other.retries,
            adoptions=self.adoptions + other.adoptions,
            not_attempted=self.not_attempted + other.not_attempted,
            wall_s=self.wall_s + other.wall_s,
            circuit_open=self.circuit_open or other.circuit_open,
            circuit_message=self.circuit_message or other.circuit_message,
            stopped=self.stopped or other.stopped,
            member_outcomes=[*self.member_outcomes, *other.member_outcomes],
            done=self.done | other.done,
        )
        return merged

    def summary(self) -> dict[str, float]:
        """Numeric figures for metadata and CLI tables."""
        figures: dict[str, float] = {
            "ok": self.count(outcome="ok"),
            "adopted": self.count(outcome="adopted"),
            "already_done": self.count(outcome="already_done"),
            "failed": self.count(outcome="failed"),
            "skipped": self.count(outcome="skipped"),
            "held": len(self.held),
            "not_attempted": self.not_attempted,
            "calls": self.calls,
            "retries": self.retries,
            "adoptions": self.adoptions,
            "wall_s": round(self.wall_s, 3),
        }
        for (resource_type, op, outcome), n in sorted(self.counts.items()):
            figures[f"{resource_type.lower()}_{op}_{outcome}"] = n
        return figures


@dataclass(frozen=True)
class _Outcome:
    outcome: Literal["ok", "failed", "adopted", "already_done", "skipped"]
    result: ScimResult | None = None
    error: ScimPipelineError | None = None
    calls: int = 1


class _Recorder:
    """Buffers state changes and audit rows; flushes every ~200 outcomes or ~50 ms.

    A flush swaps in a fresh batch, so callers must read ``recorder.batch`` after their last ``await``: a batch
    held across an await may already have been applied, and whatever is added to it then is lost.
    """

    def __init__(self, state: ProvisioningState, escrow: EscrowPolicy, breaker: CircuitBreaker) -> None:
        self.state = state
        self.escrow = escrow
        self.breaker = breaker
        self.batch = StateBatch()
        self.last_flush = time.monotonic()

    def maybe_flush(self) -> None:
        if len(self.batch) >= _FLUSH_SIZE or time.monotonic() - self.last_flush >= _FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if len(self.batch):
            batch, self.batch = self.batch, StateBatch()
            try:
                self.state.apply(batch, escrow=self.escrow)
            except LeaseLost as lost:
                # The audit rows were written; what we manage is the new holder's to record (it looks it up).
                self.breaker.stop(str(lost))
        self.last_flush = time.monotonic()

    async def run_timer(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL_S)
            self.flush()


def _is_target_failure(error: BaseException) -> bool:
    return isinstance(error, ScimServerError | ScimTransportError | ScimRateLimited | AuthenticationError)


class _Run:
    """One execution: shared context of the workers."""

    def __init__(
        self,
        client: ScimClient,
        state: ProvisioningState,
        *,
        run_id: str,
        partition: str | None,
        progress: ProgressCallback | None,
        breaker: CircuitBreaker,
        escrow: EscrowPolicy,
        user_match_attribute: str,
        group_match_attribute: str,
        total: int,
    ) -> None:
        self.client = client
        self.state = state
        self.run_id = run_id
        self.partition = partition
        self.progress = progress
        self.breaker = breaker
        self.escrow = escrow
        self.user_match = user_match_attribute
        self.group_match = group_match_attribute
        self.recorder = _Recorder(state, escrow, breaker)
        self.report = ExecutionReport()
        self.total = total
        self.done = 0
        self.user_keys_by_id: dict[str, str] = {}
        self.user_ids_by_key: dict[str, str] = {}
        self.groups_with_failed_removals: set[str] = set()

    # ---- bookkeeping ----------------------------------------------------------------------------------

    def audit(
        self,
        resource_type: str,
        op: str,
        key: str,
        outcome: _Outcome,
        scim_id: str | None = None,
        *,
        message: str | None = None,
        listed: bool = True,
    ) -> None:
        """Record one outcome: audit row, counts, failure (``message`` instead of the error's text; ``listed=False``
        leaves it out of the report's failures), breaker and progress."""
        result, error = outcome.result, outcome.error
        http_error = error if isinstance(error, ScimHTTPError) else None
        latency = result.latency_s if result else getattr(error, "latency_s", None)
        attempts = result.attempts if result else getattr(error, "attempts", None)
        self.recorder.batch.audit.append(
            AuditRecord(
                resource_type=resource_type,
                operation=op,
                key=key,
                outcome=outcome.outcome,
                scim_id=scim_id or (result.scim_id if result else None),
                http_status=result.status if result else (http_error.status if http_error else None),
                scim_type=http_error.scim_type if http_error else None,
                latency_ms=None if latency is None else round(float(latency) * 1000.0, 3),
                attempts=attempts,
                error=message or (str(error) if error else None),
                run_id=self.run_id,
                partition=self.partition,
            )
        )
        self.report.counts[(resource_type, op, outcome.outcome)] += 1
        if outcome.outcome in DONE_OUTCOMES:
            self.report.done.add((resource_type, op, key))
        self.report.calls += outcome.calls
        if error is not None and listed:
            self.report.failures.append(
                Failure(
                    resource_type,
                    op,
                    key,
                    http_error.status if http_error else None,
                    http_error.scim_type if http_error else None,
                    message or str(error),
                )
            )
        if outcome.calls:
            self.breaker.record(target_failure=error is not None and _is_target_failure(error))
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        self.recorder.maybe_flush()

    # ---- the pool ---------------------------------------------------------------------------------------

    async def run_pool(
        self,
        rows: pd.DataFrame,
        handler: Callable[[Any], Any],
        concurrency: int,
    ) -> list[str]:
        """Run ``handler`` over the rows with ``concurrency`` workers; returns key_norms never attempted."""
        iterator: Iterator[Any] = rows.itertuples(index=False)
        skipped: list[str] = []

        async def worker() -> None:
            for row in iterator:
                if self.breaker.is_open:
                    skipped.append(str(row.key_norm))
                    continue
                await handler(row)

        workers = max(1, min(concurrency, len(rows)))
        await asyncio.gather(*(worker() for _ in range(workers)))
        self.report.not_attempted += len(skipped)
        return skipped


def _json(text: Any) -> Any:
    return json.loads(str(text)) if isinstance(text, str) and text else {}


async def execute(
    client: ScimClient,
    state: ProvisioningState,
    change_set: ChangeSet | PamChangeSet,
    *,
    run_id: str,
    partition: str | None = None,
    progress: ProgressCallback | None = None,
    breaker: CircuitBreaker | None = None,
    escrow: EscrowPolicy | None = None,
    user_match_attribute: str = "userName",
    group_match_attribute: str = "displayName",
    concurrency: int | None = None,
) -> ExecutionReport:
    """Execute a change set: groups, users, memberships, then group deprovisioning — or a :class:`PamChangeSet`:
    containers, permissions, placements.

    Returns an :class:`ExecutionReport`; it never raises for a failing identity (``report.failed`` says so).
    ``concurrency`` defaults to the client's ``concurrency``.
    """
    started = time.perf_counter()
    stats_before = (client.stats.retries, client.stats.adoptions)
    if isinstance(change_set, PamChangeSet):
        total = len(change_set)
    else:
        total = len(change_set.users) + len(change_set.groups) + len(change_set.memberships)
    run = _Run(
        client,
        state,
        run_id=run_id,
        partition=partition,
        progress=progress,
        breaker=breaker or CircuitBreaker(),
        escrow=escrow or EscrowPolicy(),
        user_match_attribute=user_match_attribute,
        group_match_attribute=group_match_attribute,
        total=total,
    )
    workers = concurrency or int(getattr(client.settings, "concurrency", 16))
    timer = asyncio.create_task(run.recorder.run_timer())
    try:
        if isinstance(change_set, PamChangeSet):
            await _execute_pam(run, change_set, workers)
        else:
            await _execute_identities(run, change_set, workers)
    finally:
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
        run.recorder.flush()
    report = run.report
    report.retries = client.stats.retries - stats_before[0]
    report.adoptions = client.stats.adoptions - stats_before[1]
    report.wall_s = time.perf_counter() - started
    if run.breaker.stop_message is not None:
        report.stopped = run.breaker.stop_message
        logger.error("%s", run.breaker.stop_message)
    elif run.breaker.is_open:
        report.circuit_open = True
        report.circuit_message = run.breaker.message
        logger.warning("%s", run.breaker.message)
    return report


async def _execute_identities(run: _Run, change_set: ChangeSet, workers: int) -> None:
    groups = change_set.groups
    await _execute_kind(run, "Groups", groups[groups["op"].isin(_GROUP_UPSERT_OPS)], workers)
    if not change_set.users.empty and not run.breaker.is_open:
        run.user_ids_by_key = dict(run.state.user_ids())
        run.user_keys_by_id = {v: k for k, v in run.user_ids_by_key.items()}
    await _execute_kind(run, "Users", change_set.users, workers)
    await _execute_memberships(run, change_set.memberships, workers)
    await _execute_kind(run, "Groups", groups[groups["op"].isin(_GROUP_REMOVAL_OPS)], workers)


def _hold(run: _Run, resource_type: str, rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return rows
    held = run.state.held(resource_type)
    if not held:
        return rows
    mask = rows["key_norm"].isin(list(held))
    for row in rows[mask].itertuples(index=False):
        identity = held[str(row.key_norm)]
        run.report.held.append(
            Held(resource_type, str(row.op), str(row.key), identity.last_error, identity.next_attempt_at)
        )
        run.recorder.batch.audit.append(
            AuditRecord(
                resource_type=resource_type,
                operation=str(row.op),
                key=str(row.key),
                outcome="held",
                error=identity.last_error,
                run_id=run.run_id,
                partition=run.partition,
            )
        )
        run.report.counts[(resource_type, str(row.op), "held")] += 1
    return rows[~mask]


async def _execute_kind(run: _Run, resource_type: Literal["Users", "Groups"], rows: pd.DataFrame, workers: int) -> None:
    if rows.empty or run.breaker.is_open:
        run.report.not_attempted += 0 if rows.empty else len(rows)
        return
    refresh = rows["op"].eq("refresh")
    if refresh.any():
        # State only: the recorded values already equal the roster's; remember its hash.
        pairs = list(
            zip(rows.loc[refresh, "attrs_hash"].astype(int), rows.loc[refresh, "key_norm"].astype(str), strict=True)
        )
        batch = run.recorder.batch
        (batch.user_hash_refreshes if resource_type == "Users" else batch.group_hash_refreshes).extend(pairs)
        # Every planned change has its outcome in the audit trail, state-only ones included (no HTTP status).
        batch.audit.extend(
            AuditRecord(
                resource_type=resource_type,
                operation="refresh",
                key=str(key),
                outcome="ok",
                scim_id=None if pd.isna(scim_id) else str(scim_id),
                run_id=run.run_id,
                partition=run.partition,
            )
            for key, scim_id in zip(rows.loc[refresh, "key"], rows.loc[refresh, "scim_id"], strict=True)
        )
        run.report.counts[(resource_type, "refresh", "ok")] += len(pairs)
        run.done += len(pairs)
        rows = rows[~refresh]
        if rows.empty:
            return
    rows = _hold(run, resource_type, rows)
    creates = rows[rows["op"] == "create"]
    if not creates.empty:
        try:
            _mark_pending(run, resource_type, creates)
        except LeaseLost as lost:
            _stop(run, lost)
            run.report.not_attempted += len(rows)
            return

    async def handle(row: Any) -> None:
        await _apply_change(run, resource_type, row)

    never_sent: list[str] = []
    for wave in _manager_waves(rows):
        never_sent += await run.run_pool(wave, handle, workers)
    if never_sent and not run.breaker.stop_message:
        pending = set(creates["key_norm"].astype(str))
        run.state.clear_pending_creates(resource_type, [k for k in never_sent if k in pending])


_STOPS_THE_CYCLE = (LeaseLost, CredentialsRefused)
"""Not one identity's failure: the writer lease is gone, or the credentials were refused for good."""


def _stop(run: _Run, stop: LeaseLost | CredentialsRefused) -> None:
    """Send nothing more (the change at hand was not sent, or not answered for its own sake)."""
    run.breaker.stop(str(stop))
    run.report.not_attempted += 1


def _mark_pending(run: _Run, resource_type: Literal["Users", "Groups"], creates: pd.DataFrame) -> None:
    if not creates.empty:
        run.state.mark_pending_creates(
            resource_type,
            zip(
                creates["key_norm"].astype(object),
                creates["key"].astype(object),
                creates["shard"].astype(int),
                strict=True,
            ),
        )


def _manager_waves(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """Split changes so a user is created after the manager it names when both are created in this cycle.

    Everything else goes in the first wave; a manager cycle (A manages B manages A) is broken by sending the rest
    together, leaving those managers for the next cycle.
    """
    if "manager_key" not in rows.columns or rows.empty:
        return [rows]
    manager = rows["manager_key"].astype("string").str.casefold()
    creating = rows["op"].eq("create")
    waiting = creating & manager.notna()
    if not waiting.any():
        return [rows]
    pending = set(rows.loc[creating, "key_norm"].astype(str))
    waves: list[pd.DataFrame] = []
    remaining = rows
    remaining_manager = manager
    while len(remaining):
        blocked = remaining_manager.isin(pending).fillna(False) & remaining["op"].eq("create")
        blocked &= remaining_manager.ne(remaining["key_norm"].astype("string")).fillna(True)
        ready = remaining[~blocked]
        if ready.empty:  # a cycle of managers: send the rest now
            waves.append(remaining)
            break
        waves.append(ready)
        pending -= set(ready["key_norm"].astype(str))
        remaining, remaining_manager = remaining[blocked], remaining_manager[blocked]
    return waves


def _with_manager(run: _Run, row: Any, body: dict[str, Any], desired: dict[str, Any]) -> None:
    """Fill in a manager created earlier in this cycle (see :func:`_manager_waves`)."""
    manager_key = getattr(row, "manager_key", None)
    if manager_key is None or pd.isna(manager_key):
        return
    manager_id = run.user_ids_by_key.get(str(manager_key).casefold())
    if manager_id is None:
        return
    if ENTERPRISE_USER_SCHEMA not in body.setdefault("schemas", []):
        body["schemas"].append(ENTERPRISE_USER_SCHEMA)
    body.setdefault(ENTERPRISE_USER_SCHEMA, {})["manager"] = {"value": manager_id}
    desired[MANAGER_PATH] = str(manager_key)


def _planned_hash(row: Any, written: Mapping[str, Any] | None = None) -> int:
    """The roster hash the plan attached to a change, or UNKNOWN_HASH when what was written falls short of the
    roster row (a manager that could not be filled in yet), so the next plan compares that object in detail."""
    planned = getattr(row, "attrs_hash", UNKNOWN_HASH)
    if planned is None or pd.isna(planned):
        return UNKNOWN_HASH
    manager_key = getattr(row, "manager_key", None)
    if written is not None and manager_key is not None and not pd.isna(manager_key) and MANAGER_PATH not in written:
        return UNKNOWN_HASH
    return int(planned)


async def _apply_change(run: _Run, resource_type: Literal["Users", "Groups"], row: Any) -> None:
    op = str(row.op)
    key, key_norm = str(row.key), str(row.key_norm)
    scim_id = None if pd.isna(row.scim_id) else str(row.scim_id)
    shard = int(row.shard)
    is_user = resource_type == "Users"
    match_attribute = run.user_match if is_user else run.group_match
    try:
        if op in {"create", "resolve"}:
            await _create_or_resolve(run, resource_type, row, match_attribute)
            return
        if op == "release":
            if key_norm in run.groups_with_failed_removals:
                run.audit(resource_type, op, key, _Outcome("skipped", calls=0), scim_id)
                return
            run.recorder.batch.group_deletes.append(key_norm)
            run.audit(resource_type, op, key, _Outcome("ok", calls=0), scim_id)
            return
        assert scim_id is not None, "planned updates and deletes carry a SCIM id"
        if op == "delete":
            result = await run.client.delete(resource_type, scim_id)
            (run.recorder.batch.user_deletes if is_user else run.recorder.batch.group_deletes).append(key_norm)
            outcome = _Outcome("already_done" if result.already_done else "ok", result)
            run.audit(resource_type, op, key, outcome, scim_id)
            return
        result = await run.client.patch(resource_type, scim_id, _json(row.payload))
        attrs = _json(row.attrs)
        recorded_hash = _planned_hash(row)
        if is_user:
            run.recorder.batch.upsert_user(
                key_norm, key=key, scim_id=scim_id, shard=shard, attrs=attrs, attrs_hash=recorded_hash
            )
        else:
            run.recorder.batch.upsert_group(key_norm, key=key, scim_id=scim_id, attrs=attrs, attrs_hash=recorded_hash)
        run.audit(resource_type, op, key, _Outcome("ok", result), scim_id)
    except _STOPS_THE_CYCLE as stop:
        _stop(run, stop)
    except ScimNotFound as error:
        # Deleted on the target behind our back: forget it, so the next cycle re-creates it if still wanted.
        (run.recorder.batch.user_deletes if is_user else run.recorder.batch.group_deletes).append(key_norm)
        done = op in {"disable", "delete"}
        run.audit(resource_type, op, key, _Outcome("already_done", error=None if done else error), scim_id)
    except ScimPipelineError as error:
        if is_user:
            run.recorder.batch.fail_user(key_norm, key=key, error=str(error), shard=shard)
        else:
            run.recorder.batch.fail_group(key_norm, key=key, error=str(error))
        run.audit(resource_type, op, key, _Outcome("failed", error=error), scim_id)


async def _create_or_resolve(
    run: _Run, resource_type: Literal["Users", "Groups"], row: Any, match_attribute: str
) -> _Outcome:
    """A create (looking the identity up first when an earlier attempt may have landed), or a resolve."""
    op, key, key_norm = str(row.op), str(row.key), str(row.key_norm)
    is_user = resource_type == "Users"
    desired = _json(row.attrs)
    calls = 0
    found: Mapping[str, Any] | None = None
    if bool(row.lookup_first):
        calls += 1
        found = await run.client.find_existing(resource_type, _json(row.payload), match_attribute, key)
    if found is None and op == "resolve":
        (run.recorder.batch.user_deletes if is_user else run.recorder.batch.group_deletes).append(key_norm)
        outcome = _Outcome("ok", calls=calls)
        run.audit(resource_type, op, key, outcome)
        return outcome
    result: ScimResult | None = None
    if found is None:
        calls += 1
        body = _json(row.payload)
        if is_user:
            _with_manager(run, row, body, desired)
        result = await run.client.create(resource_type, body, match_attribute=match_attribute)
        resource = result.resource or {}
        adopted = result.adopted
    else:
        resource = dict(found)
        adopted = op == "create"
    scim_id = resource.get("id")
    if not isinstance(scim_id, str) or not scim_id:
        raise ScimTransportError(
            f"{resource_type} {op} answered without an id",
            method="POST",
            resource_type=resource_type,
            attempts=result.attempts if result else 1,
            latency_s=result.latency_s if result else 0.0,
        )
    if adopted or op == "resolve":
        default_paths = _OBSERVED_USER_PATHS if is_user else _OBSERVED_GROUP_PATHS
        paths = list(dict.fromkeys([*desired.keys(), *default_paths]))
        attrs = resource_attrs(resource, paths, manager_key=run.user_keys_by_id.get)
    else:
        attrs = desired
    origin: Literal["created", "adopted"] = "adopted" if adopted else "created"
    # Values read back from the target (adopted, resolved) are compared in detail by the next plan.
    recorded_hash = UNKNOWN_HASH if adopted or op == "resolve" else _planned_hash(row, desired)
    if is_user:
        run.recorder.batch.upsert_user(
            key_norm,
            key=key,
            scim_id=scim_id,
            shard=int(row.shard),
            attrs=attrs,
            origin=origin,
            attrs_hash=recorded_hash,
        )
        run.user_keys_by_id[scim_id] = key_norm
        run.user_ids_by_key[key_norm] = scim_id
    else:
        run.recorder.batch.upsert_group(
            key_norm, key=key, scim_id=scim_id, attrs=attrs, origin=origin, attrs_hash=recorded_hash
        )
    outcome = _Outcome("adopted" if adopted else "ok", result, calls=max(calls, 1))
    run.audit(resource_type, op, key, outcome, scim_id)
    return outcome


async def _execute_memberships(run: _Run, rows: pd.DataFrame, workers: int) -> None:
    if rows.empty:
        return
    if run.breaker.is_open:
        run.report.not_attempted += len(rows)
        return

    async def handle(row: Any) -> None:
        op, key, group_key_norm = str(row.op), str(row.key), str(row.group_key_norm)
        group_id = str(row.group_scim_id)
        members: list[str] = json.loads(str(row.member_key_norms))
        operations: list[dict[str, Any]] = json.loads(str(row.payload))
        try:
            result = await run.client.patch("Groups", group_id, operations)
            calls = 1
            if result.already_done and len(operations) > 1:
                # PATCH is atomic: one absent member failed the whole chunk, so remove the members one by one.
                for operation in operations:
                    await run.client.patch("Groups", group_id, [operation])
                    calls += 1
            pairs = [(group_key_norm, member) for member in members]
            if op == "add_members":
                run.recorder.batch.membership_adds.extend(pairs)
            else:
                run.recorder.batch.membership_removes.extend(pairs)
            outcome = _Outcome("already_done" if result.already_done else "ok", result, calls=calls)
            run.audit("Groups", op, key, outcome, group_id)
            run.report.member_outcomes.append((op, group_key_norm, tuple(members), outcome.outcome))
        except _STOPS_THE_CYCLE as stop:
            _stop(run, stop)
        except ScimNotFound as error:
            run.recorder.batch.group_deletes.append(group_key_norm)
            run.audit("Groups", op, key, _Outcome("failed", error=error), group_id)
            run.report.member_outcomes.append((op, group_key_norm, tuple(members), "failed"))
        except ScimPipelineError as error:
            if op == "remove_members":
                run.groups_with_failed_removals.add(group_key_norm)
            run.audit("Groups", op, key, _Outcome("failed", error=error), group_id)
            run.report.member_outcomes.append((op, group_key_norm, tuple(members), "failed"))

    await run.run_pool(rows, handle, workers)


# ---- Delinea's PAM kinds ---------------------------------------------------------------------------------------


async def _execute_pam(run: _Run, changes: PamChangeSet, workers: int) -> None:
    permissions = changes.permissions
    deletes = permissions["op"].eq("delete")
    # Never edited in place: other rights are a delete, then an add.
    for resource_type, rows in (
        ("Containers", changes.containers),
        ("ContainerPermissions", permissions[deletes]),
        ("ContainerPermissions", permissions[~deletes]),
        ("PrivilegedData", changes.placements),
    ):
        await _execute_pam_kind(run, resource_type, rows, changes, workers)


async def _execute_pam_kind(
    run: _Run, resource_type: str, rows: pd.DataFrame, changes: PamChangeSet, workers: int
) -> None:
    if rows.empty:
        return
    if run.breaker.is_open or changes.stop.tripped:
        run.report.not_attempted += len(rows)
        return
    state_only = rows["op"].isin(_PAM_STATE_ONLY_OPS)
    for row in rows[state_only].itertuples(index=False):
        _record_pam_state(run, resource_type, row)
    calls = _hold(run, resource_type, rows[~state_only])

    async def handle(row: Any) -> None:
        await _apply_pam_change(run, resource_type, row, changes)

    # The first alone: a 403 (no Owner rights) then stops the cycle's PAM requests after one request.
    await run.run_pool(calls.iloc[:1], handle, 1)
    await run.run_pool(calls.iloc[1:], handle, workers)


def _permission_record(row: Any, scim_id: str | None) -> PermissionRecord:
    return PermissionRecord(
        container_id=str(row.container_id),
        principal_type=str(row.principal_type),
        principal_key_norm=str(row.principal_key_norm),
        principal_key=str(row.principal),
        principal_id=str(row.principal_id),
        rights=tuple(json.loads(str(row.rights))),
        scim_id=scim_id,
    )


def _record_pam_state(run: _Run, resource_type: str, row: Any) -> None:
    """Adopt (found on the target as the file wants it) or forget (gone from the target): state only, no call."""
    op, key = str(row.op), str(row.key)
    batch = run.recorder.batch
    scim_id = None if pd.isna(row.scim_id) else str(row.scim_id)
    if resource_type == "Containers":
        assert scim_id is not None, "an adopted container carries its SCIM id"
        batch.upsert_container(key, scim_id=scim_id, origin="adopted")
    elif resource_type == "ContainerPermissions":
        if op == "adopt":
            batch.upsert_permission(_permission_record(row, scim_id))
        else:
            batch.forget_permission(str(row.container_id), str(row.principal_type), str(row.principal_key_norm))
    elif op == "adopt":
        assert scim_id is not None, "placed privileged data carries its SCIM id"
        batch.upsert_placement(scim_id, data_key=str(row.data_key), container_id=str(row.container_id))
    else:
        assert scim_id is not None, "placed privileged data carries its SCIM id"
        batch.forget_placement(scim_id)
    run.audit(resource_type, op, key, _Outcome("adopted" if op == "adopt" else "ok", calls=0), scim_id)


async def _send_pam(run: _Run, resource_type: str, row: Any) -> ScimResult:
    op = str(row.op)
    if resource_type == "Containers":
        return await run.client.create("Containers", _json(row.payload), match_attribute="name")
    if resource_type == "ContainerPermissions":
        if op == "delete":
            return await run.client.delete("ContainerPermissions", str(row.scim_id))
        return await run.client.create("ContainerPermissions", _json(row.payload))
    return await run.client.patch("PrivilegedData", str(row.scim_id), _json(row.payload))


async def _apply_pam_change(run: _Run, resource_type: str, row: Any, changes: PamChangeSet) -> None:
    stop = changes.stop
    if stop.tripped:
        run.report.not_attempted += 1
        return
    op, key = str(row.op), str(row.key)
    scim_id = None if pd.isna(row.scim_id) else str(row.scim_id)
    try:
        result = await _send_pam(run, resource_type, row)
    except _STOPS_THE_CYCLE as halt:
        _stop(run, halt)
        return
    except ScimForbidden as error:
        # Missing rights, not a failing object: no escrow; reported once, with what to grant.
        first = stop.trip(resource_type, op, key, error)
        run.audit(resource_type, op, key, _Outcome("failed", error=error), scim_id, message=stop.fix, listed=False)
        if first is not None:
            run.report.failures.append(first)
        return
    except ScimPipelineError as error:
        batch = run.recorder.batch
        if resource_type == "Containers":
            batch.fail_container(key, error=str(error))
        elif resource_type == "ContainerPermissions":
            batch.fail_permission(_permission_record(row, scim_id), error=str(error))
        else:
            batch.fail_placement(str(row.scim_id), data_key=str(row.data_key), error=str(error))
        run.audit(resource_type, op, key, _Outcome("failed", error=error), scim_id)
        return
    batch = run.recorder.batch
    outcome: Literal["ok", "adopted", "already_done"] = "ok"
    if resource_type == "Containers":
        scim_id = result.scim_id
        if scim_id is not None:
            batch.upsert_container(key, scim_id=scim_id, origin="adopted" if result.adopted else "created")
        outcome = "adopted" if result.adopted else "ok"
    elif resource_type == "ContainerPermissions":
        if op == "delete":
            outcome = "already_done" if result.already_done else "ok"
            if row.reason != "rights changed":  # a replaced slot stays ours: its add follows
                batch.forget_permission(str(row.container_id), str(row.principal_type), str(row.principal_key_norm))
        else:
            scim_id = result.scim_id
            batch.upsert_permission(_permission_record(row, scim_id or ""))
    elif op == "attach":
        batch.upsert_placement(str(row.scim_id), data_key=str(row.data_key), container_id=str(row.container_id))
    else:
        batch.forget_placement(str(row.scim_id))
    run.audit(resource_type, op, key, _Outcome(outcome, result), scim_id)
    if changes.confirmed is not None:
        changes.confirmed(row, result)
