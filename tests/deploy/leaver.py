"""A deployment for measuring leaver latency end to end: the bundled emulator on loopback as the target, a roster
folder, a Dagster home (deploy/dagster.yaml's queued run coordinator and run launcher, SQLite storage) with the code
location in a workspace.yaml, everyone synced once, then `dagster-daemon run` as a subprocess with the leaver sensor
on. Shared by tests/deploy/test_daemon_leaver.py and benchmarks/leaver_latency.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from scim_pipeline.assets.jobs import SYNC_JOB
from scim_pipeline.assets.sensors import LEAVER_SENSOR
from scim_pipeline.definitions import build_definitions
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, Roster, make_user

ROOT = Path(__file__).resolve().parents[2]
_IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@dataclass
class LeaverDeployment:
    folder: Path
    emulator: EmulatorServer
    roster: Roster
    env: dict[str, str]
    http: httpx.Client
    daemon: subprocess.Popen[bytes] | None = None
    ids: dict[str, str] = field(default_factory=dict)
    log: Path | None = None

    # -- the target, as an outside observer (its own SCIM API) --

    def scim_ids(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        start = 1
        while True:
            page = self.http.get("/scim/v2/Users", params={"startIndex": start, "count": 100}).json()
            for user in page.get("Resources", []):
                ids[user["userName"]] = user["id"]
            start += len(page.get("Resources", []))
            if not page.get("Resources") or start > page["totalResults"]:
                return ids

    def active(self, user_name: str) -> bool:
        return bool(self.http.get(f"/scim/v2/Users/{self.ids[user_name]}").json()["active"])

    def scim_requests(self) -> list[dict[str, Any]]:
        """The emulator's request log, read in-process (reading it is not itself a request)."""
        return [asdict(record) for record in self.emulator.emulator.requests]

    # -- the daemon --

    def start_daemon(self) -> None:
        self.log = self.folder / "daemon.log"
        self.daemon = subprocess.Popen(
            ["dagster-daemon", "run", "-w", str(self.folder / "workspace.yaml")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
        )

    def stop_daemon(self) -> None:
        if self.daemon is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.daemon.pid, signal.SIGTERM)
        try:
            self.daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait(timeout=30)
        self.daemon = None

    def _alive(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log else ""
            raise AssertionError(f"dagster-daemon stopped: {tail}")

    def sensor_ticks(self, instance: DagsterInstance, *, after: float | None = None) -> list[Any]:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == LEAVER_SENSOR:
                return list(instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after))
        return []

    def wait_for_first_poll(self, instance: DagsterInstance, timeout: float = 150) -> None:
        """Until the sensor has recorded its cursor (the daemon loaded the location and ticked once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            ticks = self.sensor_ticks(instance)
            failed = [tick for tick in ticks if tick.status == TickStatus.FAILURE]
            if failed:
                raise AssertionError(f"the leaver sensor failed: {failed[0].error}")
            if any(tick.status == TickStatus.SKIPPED for tick in ticks):
                return
            time.sleep(0.5)
        raise AssertionError(f"the leaver sensor did not tick within {timeout:.0f} s")

    def wait_until_idle(self, instance: DagsterInstance, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while instance.get_runs(filters=RunsFilter(statuses=_IN_PROGRESS), limit=1):
            self._alive()
            if time.monotonic() > deadline:
                raise AssertionError("a run did not finish in time")
            time.sleep(0.5)

    def leave(self, index: int, *, remove: bool) -> str:
        """Disable user ``index`` in the roster (``active=false``) or remove them; their user name."""
        user_name = self.roster.users[index]["user_name"]
        if remove:
            self.roster.users = [user for user in self.roster.users if user["user_name"] != user_name]
            self.roster.memberships = [(g, u) for g, u in self.roster.memberships if u != user_name]
        else:
            self.roster.users[index]["active"] = "false"
        self.roster.write()
        return user_name

    def seconds_until_disabled(self, user_name: str, started: float, *, timeout: float = 180) -> float:
        """From ``started`` (monotonic) until the target shows ``user_name`` with active=false (polls GET
        /Users/{id})."""
        while time.monotonic() - started < timeout:
            self._alive()
            if not self.active(user_name):
                return time.monotonic() - started
            time.sleep(0.25)
        raise AssertionError(f"{user_name} still active on the target after {timeout:.0f} s")


@contextlib.contextmanager
def leaver_deployment(folder: Path, *, users: int = 30, poll_seconds: int = 15) -> Iterator[LeaverDeployment]:
    """Everything but the daemon: synced once, in-process, before the daemon starts. ``DAGSTER_HOME`` and the
    ``SCIM_*`` variables are set in ``os.environ`` while the context lasts (DagsterInstance.get() reads them)."""
    roster_folder = folder / "roster"
    roster_folder.mkdir(parents=True)
    roster = Roster(
        roster_folder,
        [make_user(i) for i in range(users)],
        ["Auditors"],
        [("Auditors", make_user(i)["user_name"]) for i in range(0, users, 3)],
    )
    roster.write()
    home = folder / "dagster_home"
    home.mkdir()
    instance_config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    instance_config.pop("storage")  # SQLite in the home: the queue, launcher and limits stay production's
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    (folder / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: scim_pipeline.definitions\n"
        f"      working_directory: {ROOT}\n"
        "      location_name: scim_pipeline\n",
        encoding="utf-8",
    )
    with EmulatorServer(EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET})) as emulator:
        scim_env = {
            "DAGSTER_HOME": str(home),
            "SCIM_BASE_URL": emulator.base_url,
            "SCIM_TOKEN_URL": emulator.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster_folder),
            "SCIM_SHARDS": "4",
            "SCIM_STATE_URL": f"sqlite:///{folder / 'state.sqlite'}",
            "SCIM_LEAVER_SENSOR": "true",
            "SCIM_LEAVER_POLL_SECONDS": str(poll_seconds),
        }
        saved = {name: os.environ.get(name) for name in scim_env}
        os.environ.update(scim_env)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        token = httpx.post(
            emulator.token_url,
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        ).json()["access_token"]
        base = emulator.base_url.rsplit("/scim/v2", 1)[0]
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        deployment = LeaverDeployment(folder, emulator, roster, env, http)
        try:
            with DagsterInstance.get() as instance:
                result = build_definitions(scim_env).resolve_job_def(SYNC_JOB).execute_in_process(instance=instance)
                assert result.success, "the first sync failed"
            deployment.ids = deployment.scim_ids()
            assert len(deployment.ids) == users
            yield deployment
        finally:
            deployment.stop_daemon()
            http.close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@dataclass(frozen=True)
class Leaver:
    """One measurement: when the roster changed (epoch seconds) and how long until the target showed it."""

    changed_at: float
    seconds: float


def measure(deployment: LeaverDeployment, instance: DagsterInstance, repetitions: int) -> list[Leaver]:
    """From a roster change to the leaver disabled on the target, ``repetitions`` times (disable, remove,
    disable, …), each after the previous run has ended."""
    leavers: list[Leaver] = []
    for repetition in range(repetitions):
        deployment.wait_until_idle(instance)
        changed_at, started = time.time(), time.monotonic()
        user_name = deployment.leave(repetition + 1, remove=repetition % 2 == 1)
        leavers.append(Leaver(changed_at, deployment.seconds_until_disabled(user_name, started)))
    deployment.wait_until_idle(instance)
    return leavers
