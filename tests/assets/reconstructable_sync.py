"""A module-level handle on the sync job, so Dagster's multiprocess executor can rebuild it in each step process."""

import os

from dagster import JobDefinition

from scim_pipeline.assets.component import ScimProvisioningComponent
from scim_pipeline.assets.jobs import SYNC_JOB
from scim_pipeline.settings import PipelineSettings


def sync_job() -> JobDefinition:
    settings = PipelineSettings.from_env(os.environ)
    component = ScimProvisioningComponent.from_settings(settings, executor="multiprocess")
    return component.definitions().resolve_job_def(SYNC_JOB)
