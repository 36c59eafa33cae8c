"""One writer per target: the lease in the state store (on SQLite and a real PostgreSQL server), and its fence."""

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
from scim_pipeline.sync.state import (
    AuditRecord,
    LeaseHeld,
    LeaseHolder,
    LeaseLost,
    LeaseWait,
    ProvisioningState,
    StateBatch,
)
from scim_pipeline.sync.state.lease import process_is_running
from scim_pipeline.sync.state.schema import writer_leases


def holder(run_id: str, *, pid: int = 1, host: str = "elsewhere") -> LeaseHolder:
    """A holder on another host (its process cannot be checked from here)."""
    return LeaseHolder(run_id, pid, host)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def state(state_url: str) -> Iterator[ProvisioningState]:
    with ProvisioningState.open(state_url) as store:
        yield store


def test_a_second_writer_says_whom_it_waits_for_at_once_and_stops_naming_the_holder(state: ProvisioningState) -> None:
    waits: list[LeaseWait] = []
    with state.writer_lease("default", holder("A"), ttl_s=30) as first:
        started = time.monotonic()
        with (
            pytest.raises(LeaseHeld) as raised,
            state.writer_lease("default", holder("B"), wait_s=1.5, ttl_s=30, on_wait=waits.append),
        ):
            pytest.fail("two writers held one target")
        assert 1.5 <= time.monotonic() - started < 6
    assert waits, "the wait was silent"
    assert waits[0].waited_s < 1, "told at once whom it waits for"
    told = waits[0].describe()
    assert "run A (pid 1 on host elsewhere)" in told
    assert "since 20" in told
    assert "SCIM_LEASE_WAIT" in told
    error = raised.value
    assert isinstance(error, ScimPipelineError)
    assert (error.target, error.holder, error.since) == (
        "default",
        "run A (pid 1 on host elsewhere)",
        first.acquired_at,
    )
    assert "stopped waiting after" in str(error)
    assert "SCIM_LEASE_WAIT" in str(error)


def test_leases_of_different_targets_do_not_wait_for_each_other(state: ProvisioningState) -> None:
    with (
        state.writer_lease("tenant-a", holder("A"), wait_s=0) as a,
        state.writer_lease("tenant-b", holder("B"), wait_s=0) as b,
    ):
        assert (a.waited_for, b.waited_for) == (None, None)


def test_a_waiting_writer_gets_the_lease_when_the_holder_releases_it_and_says_whom_it_waited_for(
    state: ProvisioningState,
) -> None:
    released = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with state.writer_lease("default", holder("A"), ttl_s=30):
            holding.set()
            time.sleep(1.0)
        released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    with state.writer_lease("default", holder("B"), wait_s=20, ttl_s=30) as lease:
        assert released.is_set(), "the lease was given before its holder released it"
        assert lease.waited_for == "run A (pid 1 on host elsewhere)"
        assert 0.5 < lease.waited_s < 10
    thread.join()


def test_a_wait_for_another_writer_costs_almost_no_cpu(state: ProvisioningState) -> None:
    with state.writer_lease("default", holder("A"), ttl_s=30):
        cpu_before = time.process_time()
        with pytest.raises(LeaseHeld), state.writer_lease("default", holder("B"), wait_s=3, ttl_s=30):
            pass
        assert time.process_time() - cpu_before < 0.5, "the wait spins instead of sleeping"


def test_the_heartbeat_keeps_a_lease_alive_and_writable_past_its_ttl(state: ProvisioningState) -> None:
    with state.writer_lease("default", holder("A"), ttl_s=0.9) as lease:
        time.sleep(2.0)
        with pytest.raises(LeaseHeld), state.writer_lease("default", holder("B"), wait_s=0):
            pass
        lease.check()
    with state.writer_lease("default", holder("B"), wait_s=0) as second:
        assert second.took_over_from is None, "a released lease is free, not taken over"


def test_a_lease_taken_over_while_we_stalled_is_reported_lost(state: ProvisioningState) -> None:
    with state.writer_lease("default", holder("A"), ttl_s=0.9) as lease:
        # Someone else's writer took the row (as after our lease expired while we were frozen).
        with state._write() as conn:
            conn.execute(sa.update(writer_leases).values(holder="run B", token="theirs"))
        deadline = time.monotonic() + 5
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="run A"):
            lease.check()


def test_a_writer_that_was_frozen_past_its_lease_notices_before_its_next_write(state: ProvisioningState) -> None:
    with state.writer_lease("default", holder("A"), ttl_s=60) as lease:
        # As after a SIGSTOP of a minute: the last renewal is as old by both clocks, the heartbeat not yet awake.
        lease.renewed(time.monotonic() - 61, time.time() - 61)
        with pytest.raises(LeaseLost, match="frozen"):
            lease.check()


def test_a_fenced_store_records_only_the_audit_of_a_writer_that_lost_its_lease(state: ProvisioningState) -> None:
    with state.writer_lease("default", holder("A"), ttl_s=60) as lease, state.fenced(lease):
        batch = StateBatch()
        batch.upsert_user("alice", key="alice", scim_id="u1", shard=0, attrs={"userName": "alice"})
        batch.audit.append(AuditRecord("Users", "create", "alice", "ok", scim_id="u1", run_id="run-a"))
        state.apply(batch)  # held: both land
        assert state.get_user("alice") is not None
        with state._write_unfenced() as conn:  # another writer took the target over
            conn.execute(sa.update(writer_leases).values(token="theirs"))
        late = StateBatch()
        late.upsert_user("bob", key="bob", scim_id="u2", shard=0, attrs={"userName": "bob"})
        late.audit.append(AuditRecord("Users", "create", "bob", "ok", scim_id="u2", run_id="run-a"))
        with pytest.raises(LeaseLost):
            state.apply(late)
        with pytest.raises(LeaseLost):
            state.set_value("target_quirks", "default", "{}")
    assert state.get_user("bob") is None, "a writer without its lease recorded what it manages"
    assert list(state.audit(run_id="run-a")["key"]) == ["alice", "bob"], "what was sent is told truthfully"


_HOLDER = """
import sys, time
from pathlib import Path
from scim_pipeline.sync.state import LeaseHeld, LeaseHolder, ProvisioningState
url, name, wait_s, hold_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
go = Path(sys.argv[6])
with ProvisioningState.open(url) as store:
    print("ready", flush=True)
    while not go.exists():  # every racer starts at once, however slowly each process started
        time.sleep(0.01)
    try:
        me = LeaseHolder.this_process(name)
        with store.writer_lease("default", me, wait_s=wait_s, ttl_s=float(sys.argv[5])) as lease:
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
    racers = [_start(state_url, name, go, wait_s=30, hold_s=1.0) for name in ("A", "B")]
    go.touch()
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    (a_start, a_end), (b_start, b_end) = (_interval(out) for out, _ in outputs)
    assert a_end <= b_start or b_end <= a_start, "both held the lease at the same time"
    second = outputs[0][0] if a_start > b_start else outputs[1][0]
    first = racers[1] if a_start > b_start else racers[0]
    assert f"waited_for=run {'B' if a_start > b_start else 'A'} (pid {first.pid} on host" in second


def test_a_process_that_cannot_wait_stops_with_the_holders_run_pid_and_host(state_url: str, tmp_path: Path) -> None:
    ProvisioningState.open(state_url).close()
    go = tmp_path / "go"
    go.touch()
    first = _start(state_url, "A", go, wait_s=0, hold_s=60)
    assert first.stdout is not None
    assert first.stdout.readline().startswith("acquired")
    try:
        late = _start(state_url, "B", go, wait_s=0.5, hold_s=0)
        out, err = late.communicate(timeout=60)
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert late.returncode == 3, (out, err)
    assert f"run A (pid {first.pid} on host {socket.gethostname()})" in out


def test_the_lease_of_a_holder_on_another_host_expires_after_its_ttl(state: ProvisioningState) -> None:
    with state._write_unfenced() as conn:  # a holder elsewhere that stopped renewing a second ago
        now = time.time()
        conn.execute(
            sa.insert(writer_leases).values(
                target="default",
                holder="run A (pid 9 on host elsewhere)",
                token="theirs",
                run_id="A",
                pid=9,
                host="elsewhere",
                acquired_at=now - 5,
                renewed_at=now - 1,
                expires_at=now + 1.5,
            )
        )
    started = time.monotonic()
    with state.writer_lease("default", holder("B"), wait_s=10) as lease:
        assert lease.took_over_from == "run A (pid 9 on host elsewhere)"
        assert 1 < time.monotonic() - started < 6


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_the_lease_of_a_killed_process_on_this_host_is_taken_over_at_once(
    state_url: str, tmp_path: Path, reaped: bool
) -> None:
    ProvisioningState.open(state_url).close()
    go = tmp_path / "go"
    go.touch()
    killed = _start(state_url, "A", go, wait_s=0, hold_s=60, ttl_s=120.0)
    assert killed.stdout is not None
    assert killed.stdout.readline().startswith("acquired")
    os.kill(killed.pid, signal.SIGKILL)
    if reaped:
        killed.communicate(timeout=30)
    else:
        deadline = time.monotonic() + 10  # killed, not yet waited for: a zombie
        while process_is_running(killed.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(f"/proc/{killed.pid}").exists(), "the killed holder should still be a zombie here"
    started = time.monotonic()
    try:
        with (
            ProvisioningState.open(state_url) as store,
            store.writer_lease("default", holder("B"), wait_s=30) as lease,
        ):
            assert lease.took_over_from == f"run A (pid {killed.pid} on host {socket.gethostname()})"
            assert time.monotonic() - started < 5, "waited out the ttl of a dead holder"
    finally:
        killed.communicate(timeout=30)


def test_a_recycled_pid_is_not_taken_for_the_holder() -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        from scim_pipeline.sync.state.lease import _process_started

        started = _process_started(other.pid)
        assert started is not None
        host = socket.gethostname()
        assert not LeaseHolder("A", other.pid, host, started).is_gone()
        assert LeaseHolder("A", other.pid, host, started + 1000).is_gone(), "another process now has its pid"
    finally:
        other.kill()
        other.wait()
