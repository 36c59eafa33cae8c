"""One writer per SCIM target at a time, across processes and machines — a lease row in the state store, and a fence.

A cycle takes the lease of its target before it plans and holds it until it has recorded its last outcome. Two
cycles that both planned against the same state would both create the same people (a target that does not enforce
uniqueness keeps both copies); with the lease the second one waits for the first, then plans against what the first
recorded. The lease is taken by one atomic conditional upsert (a row lock on PostgreSQL, the write lock on SQLite),
renewed by a heartbeat thread every ``ttl_s / 3`` and deleted on release; a holder that died stops renewing, and its
lease can be taken over ``ttl_s`` after its last renewal — at once when its process on this host is gone.

A lease is not a fence by itself: a holder frozen for minutes (a paused VM, SIGSTOP, a swap storm) wakes up still
believing it holds the lease. So:

- :meth:`WriterLease.check` is called before every write request; it fails once the time since our last successful
  renewal (monotonic and wall clocks both, whichever says more) reaches the ttl less a margin — before anyone else
  could have taken the lease over — so a writer that was frozen notices before its next request;
- every state write is conditioned on our token (:func:`assert_held`, inside the write transaction), so a writer
  that lost its lease records nothing but its audit rows.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from scim_pipeline.scim.errors import ScimPipelineError
from scim_pipeline.sync.state.schema import upsert, writer_leases

__all__ = [
    "LeaseHeld",
    "LeaseHolder",
    "LeaseLost",
    "LeaseWait",
    "WriterLease",
    "assert_held",
    "hold_writer_lease",
    "process_is_running",
]

logger = logging.getLogger(__name__)

WriteTransaction = Callable[[], AbstractContextManager[sa.Connection]]
"""Opens a write transaction on the state store (``BEGIN IMMEDIATE`` on SQLite)."""

POLL_S = 1.0
"""How often a waiting cycle asks again (it sleeps in between: no CPU)."""
TELL_EVERY_S = 15.0
"""How often a waiting cycle says again whom it waits for (the first time at once)."""


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _process_started(pid: int) -> float | None:
    """When process ``pid`` of this host started (seconds since boot, from /proc), or None where unknown: together
    with the pid it names one process, so a recycled pid is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return None


def process_is_running(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host runs: not gone, not a zombie (killed but not yet reaped), and — when
    ``started`` is known — the same process, not a later one that got its pid."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc here: the signal check is all we can tell
    state = stat[stat.rfind(")") + 2 :].split(maxsplit=1)[0]
    if state in ("Z", "X"):
        return False
    return started is None or _process_started(pid) in (None, started)


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds (or wants) a lease: a run of a process on a host."""

    run_id: str
    pid: int
    host: str
    process_started: float | None = None

    @classmethod
    def this_process(cls, run_id: str) -> LeaseHolder:
        pid = os.getpid()
        return cls(run_id=run_id, pid=pid, host=socket.gethostname(), process_started=_process_started(pid))

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on host {self.host})"

    @property
    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_gone(self) -> bool:
        """True when this holder's process ran on this host and no longer runs (SIGKILL, OOM, a zombie)."""
        return self.is_local and not process_is_running(self.pid, self.process_started)


class LeaseHeld(ScimPipelineError):
    """Another live writer kept the target's lease for longer than we were willing to wait."""

    def __init__(self, target: str, holder: str, since: float, waited_s: float) -> None:
        super().__init__(
            f"target {target!r} is being written by {holder} since {_when(since)}; stopped waiting after "
            f"{waited_s:.0f} s (SCIM_LEASE_WAIT). Run again when it has finished (a lease whose holder died expires "
            "by itself)."
        )
        self.target = target
        self.holder = holder
        self.since = since
        self.waited_s = waited_s


class LeaseLost(ScimPipelineError):
    """Our lease expired (we were frozen, or could not renew it) and another writer may hold it: stop writing."""

    def __init__(self, target: str, holder: str, reason: str = "not renewed before it expired") -> None:
        super().__init__(
            f"the writer lease of target {target!r} held by {holder} was lost ({reason}): nothing more was sent or "
            "recorded; the next cycle resumes (it looks up what this one may have created)"
        )
        self.target = target
        self.holder = holder


@dataclass(frozen=True)
class LeaseWait:
    """A wait for another writer, as told to the person or log that waits: whom, since when, for how long yet."""

    target: str
    holder: str
    since: float
    waited_s: float
    limit_s: float

    def describe(self) -> str:
        left = max(0.0, self.limit_s - self.waited_s)
        return (
            f"waiting for {self.holder}, writing to {self.target} since {_when(self.since)}; "
            f"waited {self.waited_s:.0f} s, giving up in {left:.0f} s (SCIM_LEASE_WAIT)"
        )


@dataclass
class WriterLease:
    """A lease held on one target. ``waited_s`` / ``waited_for`` tell whom we waited for before we got it
    (``waited_for`` is None when it was free); ``took_over_from`` names a holder whose lease had expired (not
    released): whatever it had in flight is unknown, and the next plan looks it up before creating anything."""

    target: str
    holder: LeaseHolder
    token: str
    acquired_at: float
    ttl_s: float
    waited_s: float = 0.0
    waited_for: str | None = None
    took_over_from: str | None = None
    margin_s: float = 0.0
    _renewed_monotonic: float = field(default_factory=time.monotonic, repr=False)
    _renewed_wall: float = field(default_factory=time.time, repr=False)
    _lost: threading.Event = field(default_factory=threading.Event, repr=False)
    _lost_reason: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.margin_s:
            # Stop writing well before anyone else may take over: a third of the ttl (the heartbeat renews every
            # third, so a live holder is never near it).
            self.margin_s = self.ttl_s / 3

    @property
    def lost(self) -> bool:
        """True once the lease was found lost or too old to trust."""
        return self._lost.is_set()

    def renewed(self, monotonic: float, wall: float) -> None:
        """Record a successful renewal that was started at these clock readings (called by the heartbeat)."""
        self._renewed_monotonic = monotonic
        self._renewed_wall = wall

    def mark_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    def age_s(self) -> float:
        """Seconds since the start of our last successful renewal, by whichever clock says more."""
        return max(time.monotonic() - self._renewed_monotonic, time.time() - self._renewed_wall)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless we may still write: called before every write request."""
        if not self.lost and self.age_s() >= self.ttl_s - self.margin_s:
            self.mark_lost(f"not renewed for {self.age_s():.0f} s — this process was frozen or cut off")
        if self.lost:
            raise LeaseLost(self.target, self.holder.describe(), self._lost_reason)


def database_now(connection: sa.Connection) -> float:
    """Epoch seconds by the database's clock on PostgreSQL (machines' clocks may differ), the local clock on SQLite
    (the same machine by construction)."""
    if connection.dialect.name == "postgresql":
        return float(connection.execute(sa.text("SELECT extract(epoch from clock_timestamp())")).scalar_one())
    return time.time()


def assert_held(connection: sa.Connection, lease: WriterLease) -> None:
    """Inside a write transaction: raise :class:`LeaseLost` unless the lease row is still ours and unexpired. The
    row is locked for the rest of the transaction (the write lock on SQLite), so no one takes it meanwhile."""
    lease.check()
    table = writer_leases
    statement = sa.select(table.c.expires_at).where(table.c.target == lease.target, table.c.token == lease.token)
    if connection.dialect.name == "postgresql":
        statement = statement.with_for_update()
    expires_at = connection.execute(statement).scalar_one_or_none()
    if expires_at is None or float(expires_at) <= database_now(connection):
        lease.mark_lost("another writer took it over" if expires_at is None else "it expired")
        raise LeaseLost(lease.target, lease.holder.describe(), lease._lost_reason)


@dataclass(frozen=True)
class _Current:
    ours: bool
    holder: str
    acquired_at: float
    expired_holder: str | None
    local: LeaseHolder | None


def _holder_of(row: sa.Row[tuple[object, ...]]) -> LeaseHolder | None:
    """The recorded holder as a process, when the row names one (rows of older versions only have a label)."""
    if row.pid is None or row.host is None:
        return None
    started = float(row.process_started) if row.process_started is not None else None
    return LeaseHolder(str(row.run_id or ""), int(str(row.pid)), str(row.host), started)


def _try_acquire(begin: WriteTransaction, target: str, holder: LeaseHolder, token: str, ttl_s: float) -> _Current:
    """One atomic attempt."""
    table = writer_leases
    columns = [table.c[name] for name in ("holder", "token", "acquired_at", "run_id", "pid", "host", "process_started")]
    with begin() as conn:
        now = database_now(conn)
        before = conn.execute(sa.select(*columns).where(table.c.target == target)).one_or_none()
        statement = upsert(conn, table).values(
            target=target,
            holder=holder.describe(),
            token=token,
            run_id=holder.run_id,
            pid=holder.pid,
            host=holder.host,
            process_started=holder.process_started,
            acquired_at=now,
            renewed_at=now,
            expires_at=now + ttl_s,
        )
        replace = ("holder", "token", "run_id", "pid", "host", "process_started", "acquired_at", "renewed_at")
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.target],
            set_={name: statement.excluded[name] for name in (*replace, "expires_at")},
            where=table.c.expires_at <= now,
        )
        conn.execute(statement)
        current = conn.execute(sa.select(*columns).where(table.c.target == target)).one()
    ours = current.token == token
    expired = before.holder if ours and before is not None and before.token != token else None
    return _Current(ours, str(current.holder), float(current.acquired_at), expired, _holder_of(current))


def _expire(begin: WriteTransaction, target: str, token_holder: LeaseHolder) -> None:
    with begin() as conn:
        conn.execute(
            sa.update(writer_leases)
            .where(
                writer_leases.c.target == target,
                writer_leases.c.pid == token_holder.pid,
                writer_leases.c.host == token_holder.host,
            )
            .values(expires_at=0.0)
        )
    logger.warning(
        "the writer lease of target %r was held by %s, whose process is gone: taking it over",
        target,
        token_holder.describe(),
    )


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
    while not stop.wait(interval):
        started_monotonic, started_wall = time.monotonic(), time.time()
        if lease.age_s() >= lease.ttl_s:
            # We slept past the ttl (frozen): someone may hold it now; a renewal would hide that.
            lease.mark_lost(f"not renewed for {lease.age_s():.0f} s — this process was frozen or cut off")
            return
        try:
            renewed = _renew(begin, lease)
        except Exception:
            # A passing database error: try again next beat; check() stops the writes once it is too old.
            logger.warning("could not renew the writer lease of target %r; retrying", lease.target, exc_info=True)
            continue
        if not renewed:
            logger.error("the writer lease of target %r was lost", lease.target)
            lease.mark_lost("it expired or was taken over")
            return
        lease.renewed(started_monotonic, started_wall)


def _release(begin: WriteTransaction, lease: WriterLease) -> None:
    with begin() as conn:
        conn.execute(
            sa.delete(writer_leases).where(writer_leases.c.target == lease.target, writer_leases.c.token == lease.token)
        )


@contextmanager
def hold_writer_lease(
    begin: WriteTransaction,
    target: str,
    holder: LeaseHolder,
    *,
    wait_s: float = 30.0,
    ttl_s: float = 60.0,
    on_wait: Callable[[LeaseWait], None] | None = None,
) -> Iterator[WriterLease]:
    """Acquire the lease of ``target`` for ``holder``, waiting up to ``wait_s`` for a live holder; keep it renewed
    while the block runs; release it on exit. Raises :class:`LeaseHeld` naming the holder when the wait runs out.

    ``on_wait`` hears whom we wait for at once and every :data:`TELL_EVERY_S` seconds; the wait sleeps between
    attempts and ends at once when the holder's process on this host is gone (killed, or a zombie)."""
    if ttl_s <= 0 or wait_s < 0:
        raise ValueError("ttl_s must be positive and wait_s not negative")
    token = uuid.uuid4().hex
    started = time.monotonic()
    waited_for: str | None = None
    told_at: float | None = None
    while True:
        attempt_monotonic, attempt_wall = time.monotonic(), time.time()
        current = _try_acquire(begin, target, holder, token, ttl_s)
        if current.ours:
            break
        waited_for = current.holder
        if current.local is not None and current.local.is_gone():
            _expire(begin, target, current.local)  # SIGKILL, OOM, a zombie: no need to wait out its ttl
            continue
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise LeaseHeld(target, current.holder, current.acquired_at, waited)
        if on_wait is not None and (told_at is None or time.monotonic() - told_at >= TELL_EVERY_S):
            told_at = time.monotonic()
            on_wait(LeaseWait(target, current.holder, current.acquired_at, waited, wait_s))
        time.sleep(min(POLL_S, wait_s - waited))
    lease = WriterLease(
        target=target,
        holder=holder,
        token=token,
        acquired_at=current.acquired_at,
        ttl_s=ttl_s,
        waited_s=time.monotonic() - started,
        waited_for=waited_for,
        took_over_from=current.expired_holder,
        _renewed_monotonic=attempt_monotonic,
        _renewed_wall=attempt_wall,
    )
    if current.expired_holder is not None:
        logger.warning("took over the expired writer lease of target %r from %s", target, current.expired_holder)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(begin, lease, stop), name=f"writer-lease-{target}", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()
        _release(begin, lease)  # only our own row (by token): a lease taken over stays the new holder's
