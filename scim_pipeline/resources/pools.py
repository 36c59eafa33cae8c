"""Give each SCIM target's Dagster pool its limit in the instance before the daemon first dequeues its runs.

Dagster (1.13) writes a pool's default limit into the instance only while dequeuing a run that uses it, and in that
same pass it still reads the pools known before, so the queued runs of a pool never seen blocks none of them:
the first backfill on a new deployment can start several runs of one target at once (seen: three ``scim_sync`` runs
queued before a daemon's first pass all started together; the engine's lease kept their writes apart, the others
waiting for it). Setting every pool of the code location to the default up front closes that first pass: the same
three then ran one at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = [
    "DEFAULT_MODULE",
    "DEFAULT_POOL",
    "PoolLimit",
    "code_location_pools",
    "initialize_pool_limits",
    "target_pool",
]

DEFAULT_MODULE = "scim_pipeline.definitions"
"""The code location that run-local-production.sh serves."""
DEFAULT_POOL = "scim_target"
"""The pool of the code location's one target."""


def target_pool(name: str | None) -> str:
    """The pool of a target: ``scim_target``, or ``scim_target_<name>`` for a named Component instance."""
    return f"{DEFAULT_POOL}_{name}" if name else DEFAULT_POOL


@dataclass(frozen=True, slots=True)
class PoolLimit:
    """One pool as the instance holds it after :func:`initialize_pool_limits`."""

    pool: str
    limit: int | None
    """``None``: the instance sets no default limit (``concurrency: pools: default_limit``): no bound."""
    set_now: bool
    """The limit was written by this call (before, the pool was unknown to the instance)."""


def code_location_pools(module: str = DEFAULT_MODULE) -> list[str]:
    """The pools the jobs of the code location ``module:defs`` use (a ``Definitions`` or a lazy one: Dagster's own
    loader resolves both, as the code server does)."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module(module, "defs", os.getcwd()).get_definition()
    return sorted(
        {op.pool for job in repository.get_all_jobs() for op in job.graph.iterate_op_defs() if op.pool is not None}
    )


def initialize_pool_limits(instance: DagsterInstance, pools: list[str]) -> list[PoolLimit]:
    """Write the instance's default limit for each pool that has none yet; a pool with a limit keeps it."""
    storage = instance.event_log_storage
    known = storage.get_concurrency_keys()
    for pool in set(pools) - known:
        storage.initialize_concurrency_limit_to_default(pool)  # a no-op without a default limit
    limited = storage.get_concurrency_keys()
    return [
        PoolLimit(
            pool,
            storage.get_concurrency_info(pool).slot_count if pool in limited else None,
            set_now=pool in limited - known,
        )
        for pool in pools
    ]
