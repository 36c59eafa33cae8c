"""Fixtures every test folder may use: a real PostgreSQL server (see tests/postgres.py), and the share of the
machine a test gets in a parallel run."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def machine_share(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In a parallel run (pytest-xdist), a test marked ``alone`` runs while no other test does; the others share the
    machine. A readers-writer lock on files every worker sees, with a turnstile so an ``alone`` test waiting for the
    running ones is not overtaken by the next ones."""
    if not hasattr(request.config, "workerinput"):
        yield
        return
    folder = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    alone = request.node.get_closest_marker("alone") is not None
    with contextlib.ExitStack() as held:
        turnstile = held.enter_context(_locked(folder / "turnstile.lock", fcntl.LOCK_EX))
        held.enter_context(_locked(folder / "machine.lock", fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)  # only an alone test keeps the next ones waiting
        yield


@contextlib.contextmanager
def _locked(path: Path, how: int) -> Iterator[int]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, how)
        yield descriptor
    finally:
        os.close(descriptor)  # closing releases the lock
