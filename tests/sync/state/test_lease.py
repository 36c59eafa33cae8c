"""One writer per target: the lease in the state store, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scim_pipeline.scim.errors import ScimPipelineError
from scim_pipeline.sync.state import LeaseHeld, LeaseLost, ProvisioningState
from scim_pipeline.sync.state.schema import writer_leases


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def state(state_url: str) -> Iterator[ProvisioningState]:
    with ProvisioningState.open(state_url) as store:
        yield store


def test_a_second_writer_stops_after_its_wait_naming_the_holder_and_since_when(state: ProvisioningState) -> None:
    with state.writer_lease("default", "run A (pid 1 on host h1)", ttl_s=30) as first:
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as raised, state.writer_lease("default", "run B", wait_s=0.5, ttl_s=30):
            pytest.fail("two writers held one target")
        assert 0.5 <= time.monotonic() - started < 5
    error = raised.value
    assert isinstance(error, ScimPipelineError)
    assert (error.target, error.holder, error.since) == ("default", "run A (pid 1 on host h1)", first.acquired_at)
    assert "run A (pid 1 on host h1)" in str(error)
    assert "since 20" in str(error), "the message says since when"


def test_leases_of_different_targets_do_not_wait_for_each_other(state: ProvisioningState) -> None:
    with (
        state.writer_lease("tenant-a", "run A", wait_s=0) as a,
        state.writer_lease("tenant-b", "run B", wait_s=0) as b,
    ):
        assert (a.waited_for, b.waited_for) == (None, None)


def test_a_waiting_writer_gets_the_lease_when_the_holder_releases_it_and_says_whom_it_waited_for(
    state: ProvisioningState,
) -> None:
    released = threading.Event()

    def hold() -> None:
        with state.writer_lease("default", "run A", ttl_s=30):
            holding.set()
            time.sleep(1.0)
        released.set()

    holding = threading.Event()
    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    with state.writer_lease("default", "run B", wait_s=20, ttl_s=30) as lease:
        assert released.is_set(), "the lease was given before its holder released it"
        assert lease.waited_for == "run A"
        assert 0.5 < lease.waited_s < 10
    holder.join()


def test_the_heartbeat_keeps_a_lease_alive_past_its_ttl(state: ProvisioningState) -> None:
    with state.writer_lease("default", "run A", ttl_s=0.6) as lease:
        time.sleep(1.5)
        with pytest.raises(LeaseHeld), state.writer_lease("default", "run B", wait_s=0):
            pass
        lease.ensure_held()
    with state.writer_lease("default", "run B", wait_s=0) as second:
        assert second.took_over_from is None, "a released lease is free, not taken over"


def test_a_lease_taken_over_while_we_stalled_is_reported_lost(state: ProvisioningState) -> None:
    with state.writer_lease("default", "run A", ttl_s=0.6) as lease:
        # Someone else's writer took the row (as after our lease expired while we were frozen).
        with state._write() as conn:
            conn.execute(sa.update(writer_leases).values(holder="run B", token="theirs"))
        deadline = time.monotonic() + 5
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="run A"):
            lease.ensure_held()


_HOLDER = """
import sys, time
from scim_pipeline.sync.state import LeaseHeld, ProvisioningState
from pathlib import Path
url, name, wait_s, hold_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
go = Path(sys.argv[6])
with ProvisioningState.open(url) as store:
    print("ready", flush=True)
    while not go.exists():  # every racer starts at once, however slowly each process started
        time.sleep(0.01)
    try:
        with store.writer_lease("default", name, wait_s=wait_s, ttl_s=float(sys.argv[5])) as lease:
            print(f"acquired {time.time()} waited_for={lease.waited_for} took_over_from={lease.took_over_from}",
                  flush=True)
            time.sleep(hold_s)
            print(f"released {time.time()}", flush=True)
    except LeaseHeld as error:
        print(f"stopped {error}", flush=True)
        sys.exit(3)
"""


def _start(
    url: str, name: str, go: Path, *, wait_s: float, hold_s: float, ttl_s: float = 30.0
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, name, str(wait_s), str(hold_s), str(ttl_s), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def _interval(output: str) -> tuple[float, float]:
    lines = dict(line.split(" ", 1) for line in output.splitlines())
    return float(lines["acquired"].split()[0]), float(lines["released"])


def test_two_processes_racing_for_one_target_write_one_after_the_other(state_url: str, tmp_path: Path) -> None:
    ProvisioningState.open(state_url).close()
    go = tmp_path / "go"
    racers = [_start(state_url, f"run {name}", go, wait_s=30, hold_s=1.0) for name in ("A", "B")]
    go.touch()
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    (a_start, a_end), (b_start, b_end) = (_interval(out) for out, _ in outputs)
    assert a_end <= b_start or b_end <= a_start, "both held the lease at the same time"
    second = outputs[0][0] if a_start > b_start else outputs[1][0]
    first_name = "run B" if a_start > b_start else "run A"
    assert f"waited_for={first_name}" in second


def test_a_process_that_cannot_wait_stops_with_the_holders_name(state_url: str, tmp_path: Path) -> None:
    ProvisioningState.open(state_url).close()
    go = tmp_path / "go"
    go.touch()
    holder = _start(state_url, "run A (pid 7 on host h1)", go, wait_s=0, hold_s=60)
    assert holder.stdout is not None
    assert holder.stdout.readline().startswith("acquired")
    try:
        late = _start(state_url, "run B", go, wait_s=0.5, hold_s=0)
        out, err = late.communicate(timeout=60)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert late.returncode == 3, (out, err)
    assert "run A (pid 7 on host h1)" in out


def test_the_lease_of_a_killed_holder_expires_and_is_taken_over(state_url: str, tmp_path: Path) -> None:
    ProvisioningState.open(state_url).close()
    go = tmp_path / "go"
    go.touch()
    holder = _start(state_url, "run A", go, wait_s=0, hold_s=60, ttl_s=1.0)
    assert holder.stdout is not None
    assert holder.stdout.readline().startswith("acquired")
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    killed_at = time.monotonic()
    with ProvisioningState.open(state_url) as store, store.writer_lease("default", "run B", wait_s=10) as lease:
        assert lease.took_over_from == "run A"
        assert lease.waited_for == "run A"
        assert time.monotonic() - killed_at < 5, "a dead holder's lease expires after its ttl"


def test_the_lease_of_a_killed_process_on_this_host_is_taken_over_at_once(state_url: str, tmp_path: Path) -> None:
    ProvisioningState.open(state_url).close()
    go = tmp_path / "go"
    go.touch()
    holder = _start(state_url, "placeholder", go, wait_s=0, hold_s=0)
    holder.communicate(timeout=30)  # a pid that existed on this host and is gone now
    name = f"run A (pid {holder.pid} on host {socket.gethostname()})"
    killed = _start(state_url, name, go, wait_s=0, hold_s=60, ttl_s=120.0)
    assert killed.stdout is not None
    assert killed.stdout.readline().startswith("acquired")
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)
    # The holder string names the dead placeholder's pid: the lease must not wait out its 120 s ttl.
    started = time.monotonic()
    with ProvisioningState.open(state_url) as store, store.writer_lease("default", "run B", wait_s=30) as lease:
        assert lease.took_over_from == name
        assert time.monotonic() - started < 10
