"""A module-level handle on the sync job, so Dagster's multiprocess executor can rebuild it in each step process."""

import os

from dagster import JobDefinition

from scim_pipeline.assets.jobs import SYNC_JOB
from scim_pipeline.definitions import build_definitions


def sync_job() -> JobDefinition:
    return build_definitions(os.environ).resolve_job_def(SYNC_JOB)
