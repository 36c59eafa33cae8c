"""How the code location is built: `build_definitions(env)` (`scim_pipeline.definitions:defs` is its result for
os.environ, built when that module is imported).

The command line builds the location for its own environment from here, without importing
`scim_pipeline.definitions`, which would build a second one it never uses.

Settings come from the SCIM_* environment variables (see the README). With SCIM_BASE_URL unset the location runs in
demo mode: the embedded Delinea emulator stands in for the target and the bundled sample roster for the IdP.
"""

from __future__ import annotations

import os

from dagster import Definitions

from scim_pipeline.assets.jobs import build_jobs, build_schedules
from scim_pipeline.assets.sync_assets import build_sync_assets
from scim_pipeline.resources.frames import ShardedParquetIOManager
from scim_pipeline.resources.pipeline import (
    policy_from_env,
    roster_from_env,
    shards_from_env,
    state_from_env,
)
from scim_pipeline.resources.target import target_from_env

DEMO_BANNER = (
    "DEMO MODE: SCIM_BASE_URL is not set, so this code location provisions the bundled sample roster into the "
    "embedded Delinea emulator. Set SCIM_BASE_URL, SCIM_CLIENT_ID, SCIM_CLIENT_SECRET and SCIM_ROSTER to "
    "provision a real target."
)


def build_definitions(env: dict[str, str] | os._Environ[str] = os.environ) -> Definitions:
    """Build the code location from environment variables (tests pass their own)."""
    shards = shards_from_env(env)
    target = target_from_env(env)
    roster = roster_from_env(env)
    sync_assets = build_sync_assets(shards)
    demo = target.demo_mode
    return Definitions(
        assets=sync_assets.assets,
        jobs=build_jobs(sync_assets, demo=demo),
        schedules=build_schedules(shards),
        resources={
            "scim_target": target,
            "roster": roster,
            "provisioning_state": state_from_env(env),
            "sync_policy": policy_from_env(env),
            "io_manager": ShardedParquetIOManager(),
        },
        metadata={
            "mode": "demo (embedded emulator + sample roster)" if demo else "live",
            "target": target.describe(),
            "roster": "bundled sample" if roster.uses_sample else str(roster.roster),
            "shards": shards,
            **({"demo_mode": DEMO_BANNER} if demo else {}),
        },
    )
