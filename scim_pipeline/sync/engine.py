"""The engine's one entry point: everything a cycle holds, opened and closed in one place.

:meth:`SyncEngine.run` opens the state store, reads the roster (incremental sources keep their watermarks in the
store), takes the target's writer lease (a dry run takes none), fences every state write and every write request
with it, loads the target's known quirks, opens one SCIM client (one token per cycle, obtained first), runs the
cycle (:func:`scim_pipeline.sync.cycle.run_cycle`) and returns its typed :class:`~scim_pipeline.sync.cycle.CycleReport`.
Whoever runs a cycle — the Dagster step, and through it the CLI, the schedule and backfills — only renders that
report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from scim_pipeline.scim.discovery import discover
from scim_pipeline.scim.target_quirks import TargetQuirks
from scim_pipeline.sync.cycle import CycleOptions, CycleReport, run_cycle
from scim_pipeline.sync.state import LeaseHolder, LeaseLost, LeaseWait, ProvisioningState, WriterLease

if TYPE_CHECKING:
    from scim_pipeline.scim.client import ScimClient
    from scim_pipeline.sources import RosterSource
    from scim_pipeline.sources._incremental import WatermarkStore
    from scim_pipeline.sync.execute.executor import ProgressCallback
    from scim_pipeline.sync.pam.access import AccessFile
    from scim_pipeline.sync.plan.roster import Roster

__all__ = ["LoadedRoster", "RosterReader", "SyncEngine", "Target", "collected_reports"]

logger = logging.getLogger(__name__)

QUIRKS_NAMESPACE = "target_quirks"
LEASE_TTL_S = 60.0


@dataclass(frozen=True)
class LoadedRoster:
    """A roster as one cycle read it: the normalized frames, where each table came from, a label for the UI, and
    what the source read (counts, pages, watermark, wall time)."""

    roster: Roster
    sources: dict[str, str]
    description: str
    read: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    """The SCIM target of a cycle (the Dagster target resource is one)."""

    def identity(self) -> str:
        """The target as the state store names it (its lease, its quirks)."""
        ...

    def describe(self) -> str:
        """Where the pipeline provisions to, without any credential."""
        ...

    def get_client(self, *, quirks: TargetQuirks, write_guard: Callable[[], None] | None = None) -> ScimClient:
        """A new SCIM client for this target."""
        ...


class RosterReader(Protocol):
    """The roster source of a cycle (the Dagster roster resource is one)."""

    def load(self, *, watermarks: WatermarkStore, upstream: RosterSource | None = None) -> LoadedRoster:
        """Read, validate, map and scope the roster (``upstream``: the user's own assets instead of the source)."""
        ...

    def load_access(self, roster: Roster) -> AccessFile | None:
        """The validated access file for this roster, or None when there is none."""
        ...


_COLLECTOR: ContextVar[dict[str, CycleReport] | None] = ContextVar("scim_pipeline_reports", default=None)


@contextlib.contextmanager
def collected_reports() -> Iterator[dict[str, CycleReport]]:
    """Keep the report of every cycle run in this context, by run id: the command line runs its Dagster runs in its
    own process and reads their outcome from them, never from a file."""
    reports: dict[str, CycleReport] = {}
    token = _COLLECTOR.set(reports)
    try:
        yield reports
    finally:
        _COLLECTOR.reset(token)


@dataclass
class SyncEngine:
    """One target's cycles: its client, roster source, state store and how long to wait for another writer."""

    target: Target
    roster: RosterReader
    state_url: str
    lease_wait_s: float = 300.0
    lease_ttl_s: float = LEASE_TTL_S

    def extract(self, *, upstream: RosterSource | None = None) -> LoadedRoster:
        """Read the roster only (incremental sources keep their watermarks in the state store); no target contact."""
        with ProvisioningState.open(self.state_url) as state:
            return self.roster.load(watermarks=state, upstream=upstream)

    def run(
        self,
        options: CycleOptions,
        *,
        progress: ProgressCallback | None = None,
        on_wait: Callable[[LeaseWait], None] | None = None,
        upstream: RosterSource | None = None,
    ) -> CycleReport:
        """Run one cycle (a dry run when ``options.dry_run``) and return its report.

        Raises only for what stops a cycle before its plan: a setting, an unreadable roster, a refused token, a lease
        held by another writer for longer than ``lease_wait_s`` (``on_wait`` hears whom we wait for)."""
        with ProvisioningState.open(self.state_url) as state:
            loaded = self.roster.load(watermarks=state, upstream=upstream)
            access = self.roster.load_access(loaded.roster) if options.wants_pam else None
            if options.dry_run:
                report = self._cycle(state, loaded, access, options, progress, lease=None)
            else:
                holder = LeaseHolder.this_process(options.run_id)
                with state.writer_lease(
                    self.target.identity(), holder, wait_s=self.lease_wait_s, ttl_s=self.lease_ttl_s, on_wait=on_wait
                ) as lease:
                    report = self._cycle(state, loaded, access, options, progress, lease=lease)
                report.lease_waited_for = lease.waited_for
                report.lease_waited_s = lease.waited_s
                report.lease_took_over_from = lease.took_over_from
                report.audit = state.audit(run_id=options.run_id)
        report.target = self.target.describe()
        report.roster = loaded
        collector = _COLLECTOR.get()
        if collector is not None:
            collector[options.run_id] = report
        return report

    def _cycle(
        self,
        state: ProvisioningState,
        loaded: LoadedRoster,
        access: AccessFile | None,
        options: CycleOptions,
        progress: ProgressCallback | None,
        *,
        lease: WriterLease | None,
    ) -> CycleReport:
        target_id = self.target.identity()
        stored = state.get_value(QUIRKS_NAMESPACE, target_id)
        quirks = TargetQuirks.from_dict(json.loads(stored)) if stored else TargetQuirks()
        revision = quirks.revision
        roster = loaded.roster

        async def cycle() -> CycleReport:
            guard = lease.check if lease is not None else None
            async with self.target.get_client(quirks=quirks, write_guard=guard) as client:
                await _first_contact(client, dry_run=options.dry_run)
                return await run_cycle(
                    client,
                    state,
                    roster,
                    run_id=options.run_id,
                    options=options,
                    rejected=roster.rejected,
                    progress=progress,
                    lease=lease,
                    access=access,
                )

        fence = state.fenced(lease) if lease is not None else contextlib.nullcontext()
        with fence:
            report = asyncio.run(cycle())
            if quirks.revision != revision:
                with contextlib.suppress(LeaseLost):  # learned again by the next cycle
                    state.set_value(QUIRKS_NAMESPACE, target_id, json.dumps(quirks.to_dict()))
        return report


async def _first_contact(client: ScimClient, *, dry_run: bool) -> None:
    """Every cycle obtains its token first (so a revoked secret fails the next scheduled run even when nothing
    changed); a plan also reads the target's discovery, so an unreachable target fails a plan as it fails a sync."""
    await client.authenticate()
    if dry_run:
        # Raises when the target cannot be reached (discovery itself notes failures and goes on).
        await client.get_json("/ServiceProviderConfig")
        await discover(client)
