"""A throw-away PostgreSQL server for the tests: Debian's `postgresql` binaries, a fresh cluster in a temp folder,
listening on 127.0.0.1 and a free port only, stopped at the end of the session.

`.ci/run` installs the binaries, so CI never skips; on a machine without them the tests that need a server skip
and say why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

_SUPERUSER = "scim"


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (`/usr/lib/postgresql/<version>/bin`), or one on PATH."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running cluster: `url(database)` for SQLAlchemy, `create_database()` for a fresh, empty one."""

    host: str
    port: int
    user: str

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a fresh cluster (as the `postgres` user when we are root: initdb refuses root) and stop it after."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(
            "PostgreSQL's server binaries are not installed (apt-get install -y postgresql; .ci/run does it)"
        )
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="scim-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
    data, sockets = folder / "data", folder / "sockets"
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, "mkdir", str(sockets)],
            check=True,
        )
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", _SUPERUSER, "-A", "trust", "-E", "UTF8",
             "--no-sync"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        # A throw-away cluster: durability off, loopback only, a socket folder of its own.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"),
             "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        try:
            yield PostgresServer(host="127.0.0.1", port=port, user=_SUPERUSER)
        finally:
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
