"""The Dagster home the command line uses, and where the pipeline keeps its own files (state store, demo target,
change sets) inside it.

:func:`prepare_dagster_home` makes a home's first use safe when many CLI processes start at once: Dagster creates
its SQLite storages (and stamps their Alembic revisions) on first open, and two processes doing that together can
leave ``alembic_version`` with two heads — a home every later run fails on. Here one process at a time, under a
file lock, writes ``dagster.yaml`` and opens the instance once; the others then find it ready.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scim_pipeline.resources.pools import DEFAULT_POOL, initialize_pool_limits
from scim_pipeline.scim.errors import ConfigurationError

__all__ = ["INSTANCE_YAML", "pipeline_home", "prepare_dagster_home"]

INSTANCE_YAML = """\
# Written by scim-pipeline for a Dagster home it created.
telemetry:
  enabled: false
concurrency:
  pools:
    # A target's runs share its pool (`scim_target`): the queue starts one at a time, so a backfill over many shards
    # or a schedule tick during a backfill waits in the queue (no process, no CPU) instead of in a step. `run`
    # granularity: a run that started never spins on a slot; one writer per target is the engine's lease, whose
    # waits say whom they wait for and end (runs of the CLI, which are not queued, rely on it alone).
    default_limit: 1
    granularity: run
"""
"""The instance configuration of a home the CLI creates (production settings: deploy/dagster.yaml)."""

_LOCK_NAME = ".scim_pipeline.lock"
_READY_NAME = ".scim_pipeline.ready"
"""Written once the home's storages were created and opened by this Dagster version."""
_LOCK_WAIT_S = 120.0


def pipeline_home(instance: Any | None = None) -> Path:
    """The folder for scim-pipeline's files: `<DAGSTER_HOME>/scim_pipeline`.

    The instance's own root wins, so tests on an ephemeral instance never touch a real Dagster home.
    """
    root: str | None = getattr(instance, "root_directory", None) if instance is not None else None
    if not root:
        root = os.environ.get("DAGSTER_HOME") or str(Path.home() / ".dagster")
    home = Path(root) / "scim_pipeline"
    home.mkdir(parents=True, exist_ok=True)
    return home


def prepare_dagster_home(path: str | Path) -> Path:
    """Make ``path`` a ready Dagster home and return it (absolute): the folder, a ``dagster.yaml`` (written only
    when absent, atomically), and Dagster's own storages created once.

    Safe when many processes call it at once. A home Dagster cannot open (e.g. an ``alembic_version`` with two
    heads left by an earlier race) raises a one-line ``ConfigurationError`` naming the folder and the fix.
    """
    home = Path(path).expanduser().absolute()
    ready = home / _READY_NAME
    if _is_ready(ready):
        return home  # set up by an earlier run with this Dagster version: opening it again costs about a second
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"DAGSTER_HOME {home} cannot be created: {error.strerror}") from None
    with _exclusive(home / _LOCK_NAME):
        _write_if_absent(home / "dagster.yaml", INSTANCE_YAML)
        _open_storages_once(home)
        ready.write_text(_dagster_version(), encoding="utf-8")
    return home


def _dagster_version() -> str:
    from importlib.metadata import version

    return version("dagster")


def _is_ready(marker: Path) -> bool:
    try:
        return marker.read_text(encoding="utf-8") == _dagster_version()
    except OSError:
        return False


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock on ``lock_path`` held by one process at a time (released when the process dies)."""
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConfigurationError(
                        f"another process has been preparing the Dagster home {lock_path.parent} for over "
                        f"{_LOCK_WAIT_S:.0f} s (it holds {lock_path}); stop it or try again"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _write_if_absent(target: Path, text: str) -> None:
    """Write ``target`` whole or not at all (a temp file renamed over it), keeping any existing file."""
    if target.exists():
        return
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as temp:
            temp.write(text)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def _open_storages_once(home: Path) -> None:
    """Open the instance (which creates and stamps its storages when they are new) and read from each storage."""
    from dagster import DagsterInstance

    try:
        with DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)
            # The default target's pool gets its limit now, not in the daemon's first dequeue (resources/pools.py).
            initialize_pool_limits(instance, [DEFAULT_POOL])
            if instance.schedule_storage is not None:
                instance.schedule_storage.all_instigator_state()
    except ConfigurationError:
        raise
    except Exception as error:
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        raise ConfigurationError(
            f"the Dagster home {home} cannot be opened ({type(error).__name__}: {reason}): move it away "
            f"(mv {home} {home}.broken) and run again, or after a Dagster upgrade run "
            f"`DAGSTER_HOME={home} dagster instance migrate`"
        ) from None
