"""A code location whose sync schedule ticks every minute, so "overdue by two periods" takes two minutes rather than
two hours: the browser test of the health checks (test_ui_health.py) loads it in `dagster dev`. Otherwise the
`workspace.yaml` location: the Component built from the SCIM_* variables."""

import os

from scim_pipeline.assets.component import ScimProvisioningComponent
from scim_pipeline.settings import PipelineSettings

SYNC_EVERY_MINUTE = "* * * * *"

defs = ScimProvisioningComponent.from_settings(
    PipelineSettings.from_env(os.environ), sync_schedule=SYNC_EVERY_MINUTE
).definitions()
