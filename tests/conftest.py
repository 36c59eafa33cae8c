"""Fixtures every test folder may use: a real PostgreSQL server (see tests/postgres.py), and the share of the
machine a test gets in a parallel run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, postgres_bin_dir, running_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL cluster for the whole session, on 127.0.0.1 and a free port."""
    if postgres_bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: .ci/run installs the `postgresql` package")
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install -y postgresql)")
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty database, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """In a parallel run (pytest-xdist), a test marked ``alone`` runs while no other test does; the others share the
    machine. Held around the whole protocol of a test, so the module and session fixtures its setup starts (a
    directory of 5,000 users, a domain controller) count as that test's work too."""
    with _machine_share(item):
        return (yield)


@contextlib.contextmanager
def _machine_share(item: pytest.Item) -> Iterator[None]:
    """A readers-writer lock on files every worker sees, with a turnstile so an ``alone`` test waiting for the
    running ones is not overtaken by the next ones."""
    if not hasattr(item.config, "workerinput"):
        yield
        return
    folder = Path(item.config.option.basetemp).parent  # the run's folder, above each worker's own
    alone = item.get_closest_marker("alone") is not None
    with contextlib.ExitStack() as held:
        turnstile = held.enter_context(
            _locked(folder / "turnstile.lock", fcntl.LOCK_EX, waiting_for="an alone test of another worker")
        )
        held.enter_context(
            _locked(folder / "machine.lock", fcntl.LOCK_EX, waiting_for="the tests running on the other workers")
            if alone
            else _locked(folder / "machine.lock", fcntl.LOCK_SH, waiting_for="an alone test of another worker")
        )
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)  # only an alone test keeps the next ones waiting
        yield


MACHINE_WAIT_S = 1800
"""The longest a test waits for its share of the machine: far over any test's own timeout (at most 600 s)."""


@contextlib.contextmanager
def _locked(path: Path, how: int, *, waiting_for: str) -> Iterator[int]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + MACHINE_WAIT_S
        while True:
            try:
                fcntl.flock(descriptor, how | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"waited {MACHINE_WAIT_S} s for {waiting_for} to finish ({path.name} held)"
                    ) from None
                time.sleep(0.1)
        yield descriptor
    finally:
        os.close(descriptor)  # closing releases the lock


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a ``slow`` test run first. A parallel run hands out whole files in this order, and the file
    handed out last decides when the run ends: started first, the daemon, browser and soak tests run beside the many
    short ones instead of after them. Each file's tests keep their order."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)
