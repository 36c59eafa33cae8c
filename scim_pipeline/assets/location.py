"""How the code location is built: `build_definitions(env)` (`scim_pipeline.definitions:defs` is its result for
os.environ, built when that module is imported) — the Dagster Component built from the `SCIM_*` variables.

The command line builds the location for its own environment from here, without importing
`scim_pipeline.definitions`, which would build a second one it never uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import Definitions

from scim_pipeline.assets.component import DEMO_BANNER, ScimProvisioningComponent
from scim_pipeline.settings import PipelineSettings

__all__ = ["DEMO_BANNER", "build_definitions"]


def build_definitions(env: Mapping[str, str] | None = None) -> Definitions:
    """Build the code location from environment variables (tests pass their own)."""
    settings = PipelineSettings.from_env(os.environ if env is None else env)
    return ScimProvisioningComponent.from_settings(settings).definitions()
