"""The provisioning state store: what this pipeline manages on the target, and every call it made.

SQLite (a file: WAL, ``busy_timeout``) or PostgreSQL (``psycopg``), chosen by ``SCIM_STATE_URL``, through SQLAlchemy
Core; the tables are defined once in :mod:`~scim_pipeline.sync.state.schema` and created or upgraded by the Alembic
migrations in ``scim_pipeline/migrations`` when the store is opened. It holds:

- ``managed_users`` / ``managed_groups``: the objects we created or adopted, with their SCIM id, origin
  (``created`` | ``adopted``), the attribute values we last wrote or observed (JSON, plus a 64-bit hash of them so
  a plan compares one integer per identity), the call status (``ok`` | ``pending_create`` | ``failed``) and the
  escrow counters of identities that keep failing.
- ``managed_memberships``: the (group, user) pairs *we* added or adopted — only those are ever removed.
- ``audit``: one row per executed call — when, run, partition, resource type, operation, matching key, SCIM id,
  HTTP status, scimType, latency, attempts, outcome, error. Never an attribute value beyond the matching key.
  docs/audit.md lists the questions a reviewer asks of it.
- ``target_settings``: small per-target values (source watermarks, client quirks) by namespace and key.
- ``writer_leases``: who writes to which target right now (:mod:`~scim_pipeline.sync.state.lease`).

Writes go through :class:`StateBatch`, applied in one short transaction; the executor flushes a batch every
~50 ms or 200 outcomes. Creates are crash-safe because a ``pending_create`` marker is committed before the POST
is sent: a rerun looks such an identity up before creating it.

The rooms: ``connection`` (the database), ``migrations``, ``schema`` (the tables), ``snapshot`` (typed reads),
``batch`` (what one flush writes, and the attribute hash), ``audit``, ``escrow``, ``lease`` (one writer per target,
and the fence every write passes), ``store`` (:class:`ProvisioningState`, the entry point).
"""

from scim_pipeline.sync.state.audit import AUDIT_COLUMNS, AuditRecord
from scim_pipeline.sync.state.batch import UNKNOWN_HASH, ResourceKind, StateBatch, attrs_hashes
from scim_pipeline.sync.state.escrow import EscrowPolicy, HeldIdentity
from scim_pipeline.sync.state.lease import LeaseHeld, LeaseHolder, LeaseLost, LeaseWait, WriterLease
from scim_pipeline.sync.state.snapshot import ManagedCounts, ManagedSnapshot
from scim_pipeline.sync.state.store import ProvisioningState

__all__ = [
    "AUDIT_COLUMNS",
    "UNKNOWN_HASH",
    "AuditRecord",
    "EscrowPolicy",
    "HeldIdentity",
    "LeaseHeld",
    "LeaseHolder",
    "LeaseLost",
    "LeaseWait",
    "ManagedCounts",
    "ManagedSnapshot",
    "ProvisioningState",
    "ResourceKind",
    "StateBatch",
    "WriterLease",
    "attrs_hashes",
]
