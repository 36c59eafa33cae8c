"""Writers that freeze, die or linger, through the real CLI on one Dagster home, against a target that does not
enforce unique names (the emulator with ``allow_duplicate_names``): the lease is a fence, not only a lock.

- A sync frozen (SIGSTOP) past its lease while a second sync takes the target over sends no write after it wakes,
  and its summary says it stopped; the second names the first; every user exists once.
- A sync killed (SIGKILL) mid-run, reaped at once or left a zombie, is seen as gone at once: the next sync does not
  wait out the lease.
- A sync behind a long-running one says whom it waits for within seconds, stops after SCIM_LEASE_WAIT naming it,
  and costs almost no CPU while it waits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.test_cli import summary_value

from .conftest import CLI, ROOT, WRITE_METHODS, person, write_roster

CLIENT_ID = "frozen-writer-tests"
CLIENT_SECRET = "frozen-writer-secret-2d41"
USERS = 60
LEASE_TTL_S = 6


@dataclass
class Sync:
    """A `scim-pipeline sync` subprocess whose output lines are collected with the time they arrived."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def finish(self, timeout: float = 300) -> str:
        self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=30)
        return self.output

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first_line_matching(self, pattern: str) -> float | None:
        return next((at for at, line in self.lines if re.search(pattern, line)), None)


@pytest.fixture
def lax_target() -> Iterator[EmulatorServer]:
    # 80 ms a request, one at a time: 60 creates take about 5 s, long enough to freeze a writer among them.
    config = EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}, allow_duplicate_names=True, latency_ms=80)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def sync_env(lax_target: EmulatorServer, clean_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    roster = write_roster(tmp_path / "roster", [person(i) for i in range(USERS)])
    home = tmp_path / "home"
    home.mkdir()
    return {
        **clean_env,
        "DAGSTER_HOME": str(home),  # one home for every sync: as on one machine
        "SCIM_BASE_URL": lax_target.base_url,
        "SCIM_TOKEN_URL": lax_target.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_CONCURRENCY": "1",
        "SCIM_LEASE_TTL": str(LEASE_TTL_S),
    }


def start_sync(env: dict[str, str], **overrides: str) -> Sync:
    process = subprocess.Popen(
        [*CLI, "sync"],
        env={**env, **overrides},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sync = Sync(process)
    sync.start_reading()
    return sync


def user_creates(server: EmulatorServer) -> list[int]:
    """Indexes into the request log of the answered user creates."""
    return [
        index
        for index, record in enumerate(list(server.emulator.requests))
        if record.method == "POST" and record.path.endswith("/Users") and record.status == 201
    ]


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_each_user_once(server: EmulatorServer) -> None:
    names = Counter(user["userName"] for user in server.emulator.store.dump()["Users"])
    assert names == Counter({person(i)["user_name"]: 1 for i in range(USERS)}), "a user is missing or twice"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_frozen_writer_sends_nothing_after_it_wakes_and_the_one_that_took_over_names_it(
    lax_target: EmulatorServer, sync_env: dict[str, str]
) -> None:
    frozen = start_sync(sync_env)
    wait_for(lambda: len(user_creates(lax_target)) >= 10, 180, "the first sync's creates")
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)  # a request in flight at the freeze is answered and logged before the second sync starts
        created_before_freeze = len(user_creates(lax_target))
        second = start_sync(sync_env)
        second_output = second.finish()
        assert second.process.returncode == 0, second_output
        log_length_after_second = len(lax_target.emulator.requests)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    frozen_output = frozen.finish()

    woke_writes = [r for r in list(lax_target.emulator.requests)[log_length_after_second:] if r.method in WRITE_METHODS]
    assert woke_writes == [], f"the woken writer sent {len(woke_writes)} write(s) after losing its lease"
    assert frozen.process.returncode != 0, frozen_output
    assert "lease" in frozen_output.split("result:")[-1], frozen_output
    assert "Traceback" not in frozen_output + second_output
    # The second names the first (run, pid) and took over its expired lease.
    assert f"pid {frozen.process.pid}" in second_output, second_output
    assert_each_user_once(lax_target)
    # Both summaries are true: the frozen one counts the creates answered before the freeze (those in flight
    # included: their answers were read after waking), none of the rest; the second counts the rest, and also any it
    # found by its look-ups and adopted (the frozen one's in-flight creates), never more than the roster.
    created_by_frozen = summary_value(frozen_output, "users created")
    assert created_by_frozen == created_before_freeze
    assert USERS - created_by_frozen <= summary_value(second_output, "users created") <= USERS


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_killed_writer_is_seen_gone_at_once_and_its_successor_makes_no_duplicate(
    lax_target: EmulatorServer, sync_env: dict[str, str], reaped: bool
) -> None:
    killed = start_sync(sync_env, SCIM_LEASE_TTL="600")  # a lease that would outlive the test if waited out
    wait_for(lambda: len(user_creates(lax_target)) >= 10, 180, "the first sync's creates")
    killed.process.send_signal(signal.SIGKILL)
    if reaped:
        killed.process.wait(timeout=30)
    else:
        # Left unreaped, the dead process stays in the process table as a zombie holding its pid.
        wait_for(lambda: Path(f"/proc/{killed.process.pid}/stat").read_text().split(") ")[1][0] == "Z", 30, "a zombie")
    try:
        started = time.monotonic()
        successor = start_sync(sync_env, SCIM_LEASE_WAIT="120")
        output = successor.finish()
        took = time.monotonic() - started
    finally:
        killed.process.wait(timeout=30)

    assert successor.process.returncode == 0, output
    assert "Traceback" not in output
    assert took < 100, f"the successor took {took:.0f} s: it waited for a dead writer"
    assert f"pid {killed.process.pid}" in output, "the successor does not say whose lease it took over"
    assert_each_user_once(lax_target)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sync_behind_a_long_one_says_whom_it_waits_for_then_stops_at_the_lease_wait(
    lax_target: EmulatorServer, sync_env: dict[str, str]
) -> None:
    lax_target.emulator.config = replace(lax_target.emulator.config, latency_ms=400)  # the first sync: minutes
    long_running = start_sync(sync_env)
    wait_for(lambda: len(user_creates(lax_target)) >= 2, 180, "the first sync's creates")
    try:
        started = time.monotonic()
        waiting = start_sync(sync_env, SCIM_LEASE_WAIT="12")
        wait_for(lambda: waiting.first_line_matching(r"waiting for run ") is not None, 60, "the waiting line")
        told_at = waiting.first_line_matching(r"waiting for run ")
        cpu_at_first_line = _cpu_seconds(waiting.process.pid)
        time.sleep(8)
        cpu_while_waiting = _cpu_seconds(waiting.process.pid) - cpu_at_first_line
        output = waiting.finish()
        stopped_after = time.monotonic() - started
    finally:
        long_running.process.send_signal(signal.SIGTERM)
        long_running.finish()

    assert told_at is not None
    assert told_at - started < 45, "the waiting sync was silent"  # its start-up (imports, Dagster) included
    print(f"told after {told_at - started:.1f} s; {cpu_while_waiting:.2f} s CPU over 8 s of waiting")
    assert waiting.process.returncode != 0, output
    assert f"pid {long_running.process.pid}" in output
    assert "SCIM_LEASE_WAIT" in output
    assert cpu_while_waiting < 0.5, f"{cpu_while_waiting:.2f} s of CPU in 8 s of waiting"
    assert stopped_after < 12 + 60, f"stopped after {stopped_after:.0f} s"
    assert "Traceback" not in output
