"""The Dagster Component as a user meets it: `dg check defs`, `dg scaffold defs`, and two targets in one project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, Definitions

from scim_pipeline.assets.component import ScimProvisioningComponent
from scim_pipeline.assets.partitions import range_tags
from scim_pipeline.scim import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
DG = str(Path(sys.executable).with_name("dg"))


def run_dg(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DG, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_dg_check_defs_loads_this_project() -> None:
    result = run_dg("check", "defs", cwd=ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_the_two_target_example_loads_with_both_targets_apart(tmp_path: Path) -> None:
    example = ROOT / "examples" / "two_targets"
    checked = run_dg("check", "defs", cwd=example)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    listed = run_dg("list", "defs", "--json", cwd=example)

    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    keys = {asset["asset_key"] for asset in document["assets"]}
    for target in ("staging", "production"):
        assert {f"{target}/user_provisioning", f"{target}/provisioning_audit", f"{target}/idp_users"} <= keys
    jobs = {job["name"] for job in document["jobs"]}
    assert {"scim_sync_staging", "scim_sync_production", "scim_plan_staging", "scim_reconcile_production"} <= jobs


def test_dg_scaffold_defs_writes_a_working_instance(tmp_path: Path) -> None:
    project = tmp_path / "my_project"
    shutil.copytree(ROOT / "examples" / "two_targets", project, ignore=shutil.ignore_patterns("defs"))
    (project / "two_targets" / "defs").mkdir()

    scaffolded = run_dg(
        "scaffold", "defs", "scim_pipeline.components.ScimProvisioningComponent", "hr_tenant", cwd=project
    )

    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    written = (project / "two_targets" / "defs" / "hr_tenant" / "defs.yaml").read_text()
    assert "ScimProvisioningComponent" in written
    assert "name: hr_tenant" in written
    listed = run_dg("list", "defs", "--json", cwd=project)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert "hr_tenant/user_provisioning" in keys


def test_two_instances_have_their_own_keys_jobs_pools_resources_and_state() -> None:
    staging = ScimProvisioningComponent(name="staging", shards=2).definitions()
    production = ScimProvisioningComponent(name="production", shards=4).definitions()

    merged = Definitions.merge(staging, production)

    graph = merged.resolve_asset_graph()
    assert graph.get(AssetKey(["staging", "user_provisioning"])).pools == {"scim_target_staging"}
    assert graph.get(AssetKey(["production", "user_provisioning"])).pools == {"scim_target_production"}
    assert merged.resolve_job_def("scim_sync_staging") is not None
    assert merged.resolve_job_def("scim_sync_production") is not None
    resources = merged.resources or {}
    assert {"scim_target_staging", "provisioning_state_production"} <= set(resources)
    assert resources["provisioning_state_staging"].url() != resources["provisioning_state_production"].url()


def test_a_named_demo_instance_syncs_on_its_own_emulator(tmp_path: Path) -> None:
    defs = ScimProvisioningComponent(name="rehearsal", shards=2).definitions()
    job = defs.resolve_job_def("scim_sync_rehearsal")

    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        result = job.execute_in_process(instance=instance, tags=range_tags(0, 1))

    assert result.success
    audit = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key == AssetKey(["rehearsal", "provisioning_audit"])
    ]
    assert audit
    assert (tmp_path / "scim_pipeline" / "demo_target_rehearsal.sqlite").exists()
    assert (tmp_path / "scim_pipeline" / "demo_state_rehearsal.sqlite").exists()


def test_a_bad_instance_name_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="Staging Tenant"):
        ScimProvisioningComponent(name="Staging Tenant").definitions()


def test_every_setting_is_a_component_attribute() -> None:
    from scim_pipeline.settings import PipelineSettings

    settings = set(PipelineSettings.model_fields) - {"client_secret"}  # the Component names its variable instead
    assert settings <= set(ScimProvisioningComponent.model_fields)
    assert "client_secret_env" in ScimProvisioningComponent.model_fields


def test_two_instances_read_their_own_relative_rosters_from_their_defs_folders(tmp_path: Path) -> None:
    """Each defs.yaml names `roster: roster` relative to its own folder; each plan reads its own people."""
    from dagster.components.testing.utils import create_defs_folder_sandbox

    from scim_pipeline.sync.engine import collected_reports
    from tests.reliability.conftest import person, write_roster

    people = {"alpha": [person(1), person(2)], "beta": [person(7), person(8), person(9)]}
    with create_defs_folder_sandbox() as sandbox:
        folders = {
            name: sandbox.scaffold_component(
                component_cls=ScimProvisioningComponent,
                defs_path=name,
                defs_yaml_contents={
                    "type": "scim_pipeline.components.ScimProvisioningComponent",
                    "attributes": {"name": name, "roster": "roster", "shards": 2},
                },
            )
            for name in people
        }
        for name, folder in folders.items():
            write_roster(folder / "roster", people[name])
        with sandbox.build_all_defs() as defs, DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
            planned = {}
            for name in people:
                with collected_reports() as reports:
                    result = defs.resolve_job_def(f"scim_plan_{name}").execute_in_process(instance=instance)
                assert result.success
                (report,) = reports.values()
                planned[name] = set(report.plan.users["key"])

    assert planned == {name: {row["user_name"] for row in rows} for name, rows in people.items()}


def test_a_one_shard_run_says_what_it_skipped_and_why(tmp_path: Path) -> None:
    from scim_pipeline.sync.engine import collected_reports
    from scim_pipeline.sync.outcome import CycleOutcome

    defs = ScimProvisioningComponent(name="oneshard", shards=4).definitions()
    job = defs.resolve_job_def("scim_sync_oneshard")

    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance, collected_reports() as reports:
        result = job.execute_in_process(instance=instance, tags=range_tags(1, 1))

    assert result.success
    (report,) = reports.values()
    notes = CycleOutcome.from_report(report).notes
    assert any("synced by runs over every shard only" in note and "shard(s) 1" in note for note in notes), notes
