"""One writer per SCIM target at a time, across processes and machines: a lease row in the state store.

A cycle takes the lease of its target before it plans and holds it until it has recorded its last outcome. Two
cycles that both planned against the same state would both create the same people (a target that does not enforce
uniqueness keeps both copies); with the lease the second one waits for the first, then plans against what the first
recorded. The lease is taken by one atomic conditional upsert (a row lock on PostgreSQL, the write lock on SQLite),
renewed by a heartbeat thread every ``ttl_s / 3`` and deleted on release; a holder that died stops renewing, and its
lease can be taken over ``ttl_s`` after its last renewal.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from scim_pipeline.scim.errors import ScimPipelineError
from scim_pipeline.sync.state.schema import upsert, writer_leases

__all__ = ["LeaseHeld", "LeaseLost", "WriterLease", "hold_writer_lease"]

logger = logging.getLogger(__name__)

WriteTransaction = Callable[[], AbstractContextManager[sa.Connection]]
"""Opens a write transaction on the state store (``BEGIN IMMEDIATE`` on SQLite)."""


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class LeaseHeld(ScimPipelineError):
    """Another live writer kept the target's lease for longer than we were willing to wait."""

    def __init__(self, target: str, holder: str, since: float, waited_s: float) -> None:
        super().__init__(
            f"target {target!r} is being written by {holder} since {_when(since)}; waited {waited_s:.0f} s. "
            "Run again when it has finished (a lease whose holder died expires by itself)."
        )
        self.target = target
        self.holder = holder
        self.since = since
        self.waited_s = waited_s


class LeaseLost(ScimPipelineError):
    """Our lease could not be renewed in time and another writer may have taken it over: stop writing."""

    def __init__(self, target: str, holder: str) -> None:
        super().__init__(
            f"the writer lease of target {target!r} held by {holder} was lost (not renewed before it expired): "
            "stop writing; the next cycle resumes"
        )
        self.target = target
        self.holder = holder


@dataclass
class WriterLease:
    """A lease held on one target. ``waited_s`` / ``waited_for`` tell whom we waited for before we got it
    (``waited_for`` is None when it was free); ``took_over_from`` names a holder whose lease had expired."""

    target: str
    holder: str
    token: str
    acquired_at: float
    ttl_s: float
    waited_s: float = 0.0
    waited_for: str | None = None
    took_over_from: str | None = None
    _lost: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def lost(self) -> bool:
        """True once a renewal found the lease gone or expired: another writer may hold it now."""
        return self._lost.is_set()

    def ensure_held(self) -> None:
        """Raise :class:`LeaseLost` when the lease was lost (call it before a batch of writes)."""
        if self.lost:
            raise LeaseLost(self.target, self.holder)


def database_now(connection: sa.Connection) -> float:
    """Epoch seconds by the database's clock on PostgreSQL (machines' clocks may differ), the local clock on SQLite
    (the same machine by construction)."""
    if connection.dialect.name == "postgresql":
        return float(connection.execute(sa.text("SELECT extract(epoch from clock_timestamp())")).scalar_one())
    return time.time()


def _try_acquire(
    begin: WriteTransaction, target: str, holder: str, token: str, ttl_s: float
) -> tuple[bool, str, float, str | None]:
    """One atomic attempt: (ours, current holder, its acquired_at, the expired holder we replaced)."""
    table = writer_leases
    with begin() as conn:
        now = database_now(conn)
        before = conn.execute(
            sa.select(table.c.holder, table.c.token, table.c.expires_at).where(table.c.target == target)
        ).one_or_none()
        statement = upsert(conn, table).values(
            target=target, holder=holder, token=token, acquired_at=now, renewed_at=now, expires_at=now + ttl_s
        )
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.target],
            set_={
                "holder": statement.excluded.holder,
                "token": statement.excluded.token,
                "acquired_at": statement.excluded.acquired_at,
                "renewed_at": statement.excluded.renewed_at,
                "expires_at": statement.excluded.expires_at,
            },
            where=table.c.expires_at <= now,
        )
        conn.execute(statement)
        current = conn.execute(
            sa.select(table.c.holder, table.c.token, table.c.acquired_at).where(table.c.target == target)
        ).one()
    ours = current.token == token
    replaced = before.holder if ours and before is not None and before.token != token else None
    return ours, str(current.holder), float(current.acquired_at), replaced


_LOCAL_HOLDER = re.compile(r"\(pid (\d+) on host ([^)\s]+)\)")


def _expire_if_its_process_died_here(begin: WriteTransaction, target: str, holder: str) -> bool:
    """Expire the lease of ``holder`` when it names a process of this host that no longer exists; True if so.

    Holders named ``"… (pid N on host H)"`` (as the sync step names itself) can be checked; any other holder waits
    out its ttl as before."""
    found = _LOCAL_HOLDER.search(holder)
    if found is None or found.group(2) != socket.gethostname():
        return False
    pid = int(found.group(1))
    if pid == os.getpid() or _process_exists(pid):
        return False
    with begin() as conn:
        result = conn.execute(
            sa.update(writer_leases)
            .where(writer_leases.c.target == target, writer_leases.c.holder == holder)
            .values(expires_at=0.0)
        )
    logger.warning(
        "the writer lease of target %r was held by %s, whose process is gone: taking it over", target, holder
    )
    return bool(result.rowcount)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _renew(begin: WriteTransaction, lease: WriterLease) -> bool:
    with begin() as conn:
        now = database_now(conn)
        result = conn.execute(
            sa.update(writer_leases)
            .where(
                writer_leases.c.target == lease.target,
                writer_leases.c.token == lease.token,
                writer_leases.c.expires_at > now,
            )
            .values(renewed_at=now, expires_at=now + lease.ttl_s)
        )
    return result.rowcount == 1


def _heartbeat(begin: WriteTransaction, lease: WriterLease, stop: threading.Event) -> None:
    interval = lease.ttl_s / 3
    last_renewal = time.monotonic()
    while not stop.wait(interval):
        try:
            renewed = _renew(begin, lease)
        except Exception:
            # A passing database error: try again next beat, and give up once the lease may have expired.
            logger.warning("could not renew the writer lease of target %r; retrying", lease.target, exc_info=True)
            if time.monotonic() - last_renewal >= lease.ttl_s:
                lease._lost.set()
                return
            continue
        if not renewed:
            logger.error("the writer lease of target %r was lost", lease.target)
            lease._lost.set()
            return
        last_renewal = time.monotonic()


def _release(begin: WriteTransaction, lease: WriterLease) -> None:
    with begin() as conn:
        conn.execute(
            sa.delete(writer_leases).where(writer_leases.c.target == lease.target, writer_leases.c.token == lease.token)
        )


@contextmanager
def hold_writer_lease(
    begin: WriteTransaction, target: str, holder: str, *, wait_s: float = 30.0, ttl_s: float = 60.0
) -> Iterator[WriterLease]:
    """Acquire the lease of ``target`` for ``holder``, waiting up to ``wait_s`` for a live holder; keep it renewed
    while the block runs; release it on exit. Raises :class:`LeaseHeld` naming the holder when the wait runs out."""
    if ttl_s <= 0 or wait_s < 0:
        raise ValueError("ttl_s must be positive and wait_s not negative")
    token = uuid.uuid4().hex
    started = time.monotonic()
    poll_s = min(1.0, max(0.05, ttl_s / 10))
    waited_for: str | None = None
    while True:
        ours, current, since, replaced = _try_acquire(begin, target, holder, token, ttl_s)
        if ours:
            break
        waited_for = current
        if _expire_if_its_process_died_here(begin, target, current):
            continue  # its process on this machine is gone (SIGKILL, OOM): no need to wait out its ttl
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise LeaseHeld(target, current, since, waited)
        time.sleep(min(poll_s, wait_s - waited))
    lease = WriterLease(
        target=target,
        holder=holder,
        token=token,
        acquired_at=since,
        ttl_s=ttl_s,
        waited_s=time.monotonic() - started,
        waited_for=waited_for,
        took_over_from=replaced,
    )
    if replaced is not None:
        logger.warning("took over the expired writer lease of target %r from %s", target, replaced)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(begin, lease, stop), name=f"writer-lease-{target}", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()
        _release(begin, lease)
