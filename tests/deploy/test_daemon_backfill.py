"""The production shape end to end: deploy/dagster.yaml on a real PostgreSQL (dagster-postgres), the queued run
coordinator drained by a running `dagster-daemon`, and a backfill of the code location's assets over 8 of its 16
shards, as the UI launches it — two shards per run (SCIM_SHARDS_PER_RUN=2), so four runs queue in the `scim_target`
pool. Every run succeeds, the target ends exactly in the roster's state for those shards, and the sync steps of the
runs never overlap (the pool's limit of 1, from Dagster's own step events). Three syncs queued while the daemon is
down also run one at a time once it starts (the pools limited first, as run-local-production.sh does)."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from scim_pipeline.assets.catalogue import ASSETS
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.sync.plan.sharding import stable_shard
from scim_pipeline.sync.state import ProvisioningState
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, Roster, Target, make_user
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 16
BACKFILLED = [f"{shard:03d}" for shard in range(8)]
PROVISIONING_STEP = re.compile(r"scim_cycle")
SHARDS_PER_RUN = 2
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture
def roster(tmp_path: Path) -> Roster:
    folder = tmp_path / "roster"
    folder.mkdir()
    users = [make_user(i) for i in range(40)]
    groups = ["Vault Admins", "Auditors"]
    memberships = [("Vault Admins", users[i]["user_name"]) for i in range(0, 40, 4)]
    memberships += [("Auditors", users[i]["user_name"]) for i in range(1, 40, 5)]
    result = Roster(folder, users, groups, memberships)
    result.write()
    return result


@dataclass
class Production:
    env: dict[str, str]
    workspace: Path
    emulator: EmulatorServer


@pytest.fixture
def production(
    tmp_path: Path, postgres_server: PostgresServer, roster: Roster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Production]:
    dagster_db, state_db = postgres_server.create_database(), postgres_server.create_database()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    # The daemon loads the code location itself (a code server of its own), from this checkout.
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: scim_pipeline.definitions\n"
        f"      working_directory: {ROOT}\n"
        "      location_name: scim_pipeline\n",
        encoding="utf-8",
    )
    with EmulatorServer(EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}, page_size_cap=10)) as emulator:
        env = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": postgres_server.host,
            "DAGSTER_PG_PORT": str(postgres_server.port),
            "DAGSTER_PG_USERNAME": postgres_server.user,
            "DAGSTER_PG_PASSWORD": "not-needed-on-a-trust-cluster",
            "DAGSTER_PG_DB": dagster_db,
            "SCIM_BASE_URL": emulator.base_url,
            "SCIM_TOKEN_URL": emulator.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster.folder),
            "SCIM_SHARDS": str(SHARDS),
            "SCIM_SHARDS_PER_RUN": str(SHARDS_PER_RUN),
            "SCIM_STATE_URL": postgres_server.url(state_db),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        try:
            yield Production(dict(os.environ), tmp_path / "workspace.yaml", emulator)
        finally:
            for database in (dagster_db, state_db):
                postgres_server.drop_database(database)


def _provisioning_intervals(instance: DagsterInstance, run_ids: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, run) of every sync step of the runs, from Dagster's own step events."""
    intervals = []
    finished = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for run_id in run_ids:
        starts: dict[str, float] = {}
        for entry in instance.all_logs(run_id):
            step = entry.step_key or ""
            if not PROVISIONING_STEP.search(step):
                continue
            if entry.dagster_event_type == DagsterEventType.STEP_START:
                starts[step] = entry.timestamp
            elif entry.dagster_event_type in finished and step in starts:
                intervals.append((starts[step], entry.timestamp, run_id))
    return sorted(intervals)


_LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey }
    ... on UnauthorizedError { message }
  }
}
"""
CYCLE_ASSETS = tuple(asset.name for asset in ASSETS)
"""What the UI's "Materialize all" selects: every asset of the target (the shards' and the unpartitioned ones)."""


def _error_of(entry: object) -> str:
    event = getattr(entry, "dagster_event", None)
    data = getattr(event, "event_specific_data", None)
    error = getattr(data, "error", None)
    return str(getattr(error, "message", ""))[:1500]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    """A Dagster service the test started, and the file its output goes to (a pipe nobody reads while it runs
    would fill and block every process that writes to it: the daemon's run workers inherit its stderr)."""

    process: subprocess.Popen[bytes]
    log: Path


def _alive(services: list[Service]) -> None:
    for service in services:
        if service.process.poll() is not None:
            output = service.log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise AssertionError(f"{service.log.stem} stopped: {output}")


def _wait_until_serving(webserver: str, services: list[Service]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        _alive(services)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{webserver}/server_info", timeout=5).status_code == 200:
                return
        time.sleep(1)
    raise AssertionError("the webserver did not start within 180 s")


def _launch_backfill(webserver: str) -> str:
    """The backfill as the UI's "Materialize all" → partitions launches it: an asset backfill over the shards."""
    params = {
        "assetSelection": [{"path": [name]} for name in CYCLE_ASSETS],
        "partitionNames": BACKFILLED,
    }
    answer = httpx.post(
        f"{webserver}/graphql", json={"query": _LAUNCH_BACKFILL, "variables": {"params": params}}, timeout=120
    ).json()
    launched = answer["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def _limit_pools(production: Production) -> None:
    """`scim-pipeline pools`, as run-local-production.sh runs it before it starts the daemon: without it, the
    daemon's first pass over the new pool blocks none of its queued runs."""
    pools = subprocess.run(
        [sys.executable, "-m", "scim_pipeline.cli", "pools"],
        env=production.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pools.returncode == 0, pools.stderr
    assert pools.stdout.splitlines() == ["pool scim_target: limit 1"], pools.stdout


@contextlib.contextmanager
def _started(production: Production, *commands: list[str]) -> Iterator[list[Service]]:
    """The Dagster services given, each in its own session, its output in a file beside the workspace; stopped
    (SIGTERM, then SIGKILL after 60 s) on the way out."""
    services: list[Service] = []
    try:
        for command in commands:
            log = production.workspace.parent / f"{Path(command[0]).name}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    command, env=production.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
                )
            services.append(Service(process, log))
        yield services
    finally:
        for service in services:
            os.killpg(service.process.pid, signal.SIGTERM)
        for service in services:
            try:
                service.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait(timeout=30)


def _finished_runs(
    instance: DagsterInstance, runs_filter: RunsFilter, count: int, services: list[Service]
) -> list[DagsterRun]:
    """The ``count`` runs the filter selects, once all have finished (at most 600 s; a failed run ends it at once,
    with its last events)."""
    deadline = time.monotonic() + 600
    while True:
        runs = instance.get_runs(filters=runs_filter)
        if len(runs) == count and all(run.status in FINISHED for run in runs):
            return list(runs)
        _alive(services)
        if time.monotonic() >= deadline or any(run.status == DagsterRunStatus.FAILURE for run in runs):
            detail = {
                run.run_id[:8]: [
                    f"{e.dagster_event_type} {e.step_key} {(e.user_message or '')[:300]} {_error_of(e)}"
                    for e in instance.all_logs(run.run_id)[-6:]
                ]
                for run in runs
                if run.status != DagsterRunStatus.SUCCESS
            }
            raise AssertionError(f"{len(runs)} of {count} runs: {[run.status.value for run in runs]} {detail}")
        time.sleep(2)


def _most_at_once(intervals: list[tuple[float, float, str]]) -> int:
    edges = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals])
    in_flight = most = 0
    for _, change in edges:  # at equal times an end (-1) sorts before a start (+1)
        in_flight += change
        most = max(most, in_flight)
    return most


_LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_syncs_queued_before_the_daemons_first_pass_run_one_at_a_time(production: Production) -> None:
    """Three syncs launched from the UI while the daemon is down (a new deployment, a daemon restarted): once it is
    up they run one at a time. Without `scim-pipeline pools` all three started at once."""
    _limit_pools(production)
    port = _free_port()
    webserver = f"http://127.0.0.1:{port}"
    web = ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(production.workspace)]
    with _started(production, web) as services:
        _wait_until_serving(webserver, services)
        selector = {
            "repositoryLocationName": "scim_pipeline",
            "repositoryName": "__repository__",
            "jobName": "scim_sync",
        }
        for _ in range(3):
            answer = httpx.post(
                f"{webserver}/graphql",
                json={"query": _LAUNCH_RUN, "variables": {"params": {"selector": selector, "runConfigData": {}}}},
                timeout=120,
            ).json()
            assert answer["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", answer
        daemon = ["dagster-daemon", "run", "-w", str(production.workspace)]
        with _started(production, daemon) as daemons, DagsterInstance.get() as instance:
            runs = _finished_runs(instance, RunsFilter(job_name="scim_sync"), 3, services + daemons)
            intervals = _provisioning_intervals(instance, [run.run_id for run in runs])
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 3
    assert len(intervals) == 3, "a run's sync step did not run"
    assert _most_at_once(intervals) == 1, "the scim_target pool allows 1"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_daemon_backfill_over_eight_shards_provisions_them_exactly_one_step_at_a_time(
    production: Production, roster: Roster
) -> None:
    _limit_pools(production)
    port = _free_port()
    daemon = ["dagster-daemon", "run", "-w", str(production.workspace)]
    web = ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(production.workspace)]
    with _started(production, daemon, web) as services:
        webserver = f"http://127.0.0.1:{port}"
        _wait_until_serving(webserver, services)
        backfill_id = _launch_backfill(webserver)
        with DagsterInstance.get() as instance:
            # One run of the unpartitioned assets (groups, PAM, audit) and one per two shards.
            count = len(BACKFILLED) // SHARDS_PER_RUN + 1
            runs = _finished_runs(instance, RunsFilter(tags={"dagster/backfill": backfill_id}), count, services)
            assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * count
            ranges = sorted(
                (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"])
                for run in runs
                if "dagster/asset_partition_range_start" in run.tags
            )
            assert ranges == [(BACKFILLED[i], BACKFILLED[i + 1]) for i in range(0, len(BACKFILLED), SHARDS_PER_RUN)]
            intervals = _provisioning_intervals(instance, [run.run_id for run in runs])

    assert len(intervals) == len(BACKFILLED) // SHARDS_PER_RUN + 1, "a run's sync step did not run"
    most = _most_at_once(intervals)
    assert most == 1, f"{most} sync steps ran at once; the scim_target pool allows 1"
    # And the writer lease, the one-writer guarantee itself: no two runs' writes interleave.
    with ProvisioningState.open(production.env["SCIM_STATE_URL"]) as state:
        spans = sorted(
            (float(audit["at"].min()), float(audit["at"].max()), run_id)
            for run_id in {run for _, _, run in intervals}
            if not (audit := state.audit(run_id)).empty
        )
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        assert end <= start, f"runs {first} and {second} wrote to the target at the same time"

    names = pd.Series([user["user_name"].casefold() for user in roster.users])
    in_backfill = {
        user["user_name"]
        for user, shard in zip(roster.users, stable_shard(names, SHARDS), strict=True)
        if int(shard) < len(BACKFILLED)
    }
    target = Target(production.emulator)
    assert set(target.users_by_name()) == in_backfill
    assert set(target.groups_by_name()) == set(roster.groups)
    members = target.members_by_group()
    for group in roster.groups:
        assert members[group] == {u for g, u in roster.memberships if g == group and u in in_backfill}
