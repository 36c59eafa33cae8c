"""Fixtures for the Dagster layer: a real emulator over loopback, a roster folder, a Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from scim_pipeline.assets.jobs import PLAN_JOB, SYNC_JOB
from scim_pipeline.assets.partitions import range_tags
from scim_pipeline.definitions import build_definitions
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.sync.cycle import CycleReport
from scim_pipeline.sync.engine import collected_reports
from scim_pipeline.sync.outcome import CycleOutcome
from tests.reliability.conftest import USER_COLUMNS, write_csv

CLIENT_ID = "pipeline-tests"
CLIENT_SECRET = "s3cr3t-for-the-dagster-tests"
SHARDS = 4
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def make_user(index: int, **overrides: str) -> dict[str, str]:
    user = {
        "user_name": f"user{index:03d}@example.com",
        "external_id": f"E{index:05d}",
        "given_name": f"Given{index}",
        "family_name": f"Family{index}",
        "display_name": f"Given{index} Family{index}",
        "email": f"user{index:03d}@example.com",
        "active": "true",
        "department": ["Finance", "Engineering", "Sales"][index % 3],
        "title": "Analyst",
        "employee_number": str(1000 + index),
        "manager": "",
    }
    user.update(overrides)
    return user


@dataclass
class Roster:
    folder: Path
    users: list[dict[str, str]]
    groups: list[str]
    memberships: list[tuple[str, str]]

    def write(self) -> None:
        write_csv(self.folder / "users.csv", USER_COLUMNS, self.users)
        write_csv(self.folder / "groups.csv", ["group_name", "external_id"], [{"group_name": g} for g in self.groups])
        write_csv(
            self.folder / "memberships.csv",
            ["group_name", "user_name"],
            [{"group_name": g, "user_name": u} for g, u in self.memberships],
        )


@pytest.fixture
def roster(tmp_path: Path) -> Roster:
    folder = tmp_path / "roster"
    folder.mkdir()
    users = [make_user(i) for i in range(12)]
    groups = ["Vault Admins", "Auditors", "Engineering"]
    memberships = [("Vault Admins", users[i]["user_name"]) for i in range(3)]
    memberships += [("Auditors", users[i]["user_name"]) for i in range(2, 6)]
    memberships += [("Engineering", users[i]["user_name"]) for i in range(1, 12, 3)]
    result = Roster(folder, users, groups, memberships)
    result.write()
    return result


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}, page_size_cap=5)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster_home")) as dagster_instance:
        yield dagster_instance


@dataclass
class Pipeline:
    """The code location configured against the emulator, as a user would through environment variables."""

    env: dict[str, str]
    instance: DagsterInstance
    monkeypatch: pytest.MonkeyPatch
    reports: dict[str, CycleReport] = field(default_factory=dict)

    def definitions(self) -> Definitions:
        for name, value in self.env.items():
            self.monkeypatch.setenv(name, value)
        return build_definitions(self.env)

    def sync(
        self,
        *,
        dry_run: bool = False,
        run_config: dict[str, Any] | None = None,
        shards: tuple[int, int] | None = None,
        job_name: str | None = None,
    ) -> ExecuteInProcessResult:
        """A run of the sync (or plan) job as the Launchpad launches it: without a partition (every shard), or over
        the ``shards`` range as a backfill does."""
        job = self.definitions().resolve_job_def(job_name or (PLAN_JOB if dry_run else SYNC_JOB))
        with collected_reports() as reports:
            result = job.execute_in_process(
                instance=self.instance,
                tags=range_tags(*shards) if shards is not None else {},
                run_config=run_config or {},
                raise_on_error=False,
            )
        self.reports.update(reports)
        return result

    def outcome(self, result: ExecuteInProcessResult) -> CycleOutcome:
        """The typed outcome of a run executed by :meth:`sync` (what the CLI prints)."""
        return CycleOutcome.from_report(self.reports[result.run_id])


@pytest.fixture
def pipeline(
    emulator: EmulatorServer, roster: Roster, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Pipeline:
    env = {
        "SCIM_BASE_URL": emulator.base_url,
        "SCIM_TOKEN_URL": emulator.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_ROSTER": str(roster.folder),
        "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
        "SCIM_SHARDS": str(SHARDS),
    }
    return Pipeline(env, instance, monkeypatch)


class Target:
    """Reads the emulator through its own SCIM API and request log, as an outside observer."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        token = httpx.post(
            server.token_url,
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        ).json()["access_token"]
        base = server.base_url.rsplit("/scim/v2", 1)[0]
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})

    def list(self, resource_type: str) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = []
        start = 1
        while True:
            page = self.http.get(f"/scim/v2/{resource_type}", params={"startIndex": start, "count": 100}).json()
            received = page.get("Resources", [])
            resources.extend(received)
            start += len(received)
            if not received or start > page["totalResults"]:
                return resources

    def users_by_name(self) -> dict[str, dict[str, Any]]:
        return {user["userName"]: user for user in self.list("Users")}

    def groups_by_name(self) -> dict[str, dict[str, Any]]:
        return {group["displayName"]: group for group in self.list("Groups")}

    def members_by_group(self) -> dict[str, set[str]]:
        names = {user["id"]: user["userName"] for user in self.list("Users")}
        return {
            group["displayName"]: {names[member["value"]] for member in group.get("members", [])}
            for group in self.list("Groups")
        }

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.http.get("/emulator/requests").json()
        return log

    def clear_requests(self) -> None:
        self.http.delete("/emulator/requests")

    def writes(self) -> list[dict[str, Any]]:
        return [
            record
            for record in self.requests()
            if record["method"] in WRITE_METHODS and "/oauth2/" not in record["path"]
        ]


@pytest.fixture
def target(emulator: EmulatorServer) -> Iterator[Target]:
    observer = Target(emulator)
    yield observer
    observer.http.close()
