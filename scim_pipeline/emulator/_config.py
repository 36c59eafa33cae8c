"""The settings of one emulated Delinea tenant."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEMO_CLIENT_ID = "scim-demo"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105 - the published demo credential of a local test server


RATE_LIMIT_ANNOUNCEMENTS = ("none", "x-ratelimit", "ietf")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def _demo_clients() -> dict[str, str]:
    return {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET}


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """What the emulator accepts and how it misbehaves.

    Every knob is deterministic for a given ``seed`` when requests arrive in the same order.
    """

    db_path: str | Path | None = None
    """``None`` keeps the state in memory; a path persists it to a SQLite file shared by processes."""

    clients: dict[str, str] = field(default_factory=_demo_clients)
    """OAuth clients the token endpoint accepts: client id -> client secret."""

    token_lifetime_s: float = 3600.0
    page_size_cap: int = 100
    """The most resources one list answer holds; a larger ``count`` is truncated to it."""

    latency_ms: float = 0.0
    """Added to every SCIM and token request."""
    latency_jitter_ms: float = 0.0
    """A uniform random extra delay in ``[0, latency_jitter_ms]`` on top of ``latency_ms``."""

    rate_limit_per_s: float | None = None
    """Token-bucket rate (burst of one second); over it requests answer 429 with ``Retry-After``."""
    retry_after_s: int = 1
    """The ``Retry-After`` value (seconds) sent with 429 and 503 answers."""
    announce_rate_limit: str = "none"
    """Whether SCIM answers announce ``rate_limit_per_s`` in headers: ``none``, ``x-ratelimit``
    (``X-RateLimit-Limit/-Remaining/-Reset``) or ``ietf`` (``RateLimit-Policy`` and ``RateLimit``)."""

    fault_rate: float = 0.0
    """Share of SCIM requests answering a transient 500 or 503, before anything is written."""
    unavailable_rate: float = 0.0
    """Share of SCIM requests answering 503 with ``Retry-After`` (only 503, unlike ``fault_rate``)."""
    throttle_rate: float = 0.0
    """Share of SCIM requests answering 429 with ``Retry-After``, whatever the rate (a throttling gateway)."""
    drop_rate: float = 0.0
    """Share of SCIM requests whose connection is closed without an answer; half after the write."""
    fault_scope: tuple[str, ...] = ()
    """Which SCIM requests the four shares above apply to: empty, every one; else each entry is a resource type
    (``ContainerPermissions``) or a method and a resource type (``POST ContainerPermissions``) — a storm on one
    kind of call while the rest of the tenant answers."""

    absolute_endpoints: bool = False
    """/ResourceTypes announces absolute endpoint paths (``/scim/v2/Users``) instead of ``/Users``."""
    refuse_attribute_path_patch: bool = False
    """PATCH operations with a path other than ``members`` answer 501 (a PUT still works)."""
    refuse_member_filter_removal: bool = False
    """Removing ``members[value eq "…"]`` answers 501 (removal by a ``members`` value list still works)."""
    allow_duplicate_names: bool = False
    """Users with the same userName and Groups with the same displayName may coexist (RFC 7643 does not require
    unique group names): a target where only the client can prevent duplicates."""
    drop_attributes: tuple[str, ...] = ()
    """Attributes never stored on write and left out of /Schemas: ``title``, ``name.givenName``,
    ``urn:…:enterprise:2.0:User:department``, or a whole extension (``urn:…:enterprise:2.0:User``)."""
    strict_literal_filters: bool = False
    """Filter values are read literally up to the next ``"``, escapes not decoded (as two real SCIM servers
    do): ``\\u00eb`` matches nothing, and a value holding ``\\"`` is an invalid filter."""

    owner_rights: bool = True
    """False: the service client lacks Owner-level rights on containers, so every Containers,
    ContainerPermissions and PrivilegedData request but creating a container answers 403 (Delinea's documented
    answer; creating a root folder needs another role right)."""

    seed: int = 0
    request_log_size: int = 10_000
    """How many of the latest requests stay in memory (``GET /emulator/requests``)."""
    request_log_path: str | Path | None = None
    """Also append every request as one JSON line to this file."""

    def __post_init__(self) -> None:
        shares = ("fault_rate", "unavailable_rate", "throttle_rate", "drop_rate")
        for name in shares:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if sum(getattr(self, name) for name in shares) > 1.0:
            raise ValueError("fault_rate + unavailable_rate + throttle_rate + drop_rate must not exceed 1")
        if self.page_size_cap < 1:
            raise ValueError("page_size_cap must be at least 1")
        if self.token_lifetime_s <= 0:
            raise ValueError("token_lifetime_s must be positive")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0:
            raise ValueError("rate_limit_per_s must be positive (or None for no limit)")
        if self.announce_rate_limit not in RATE_LIMIT_ANNOUNCEMENTS:
            raise ValueError(f"announce_rate_limit must be one of {', '.join(RATE_LIMIT_ANNOUNCEMENTS)}")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency_ms and latency_jitter_ms must not be negative")
        if not self.clients:
            raise ValueError("at least one OAuth client is needed")
        if isinstance(self.drop_attributes, str):  # type: ignore[unreachable]
            raise ValueError("drop_attributes must be a sequence of attribute paths, not one string")
        object.__setattr__(self, "drop_attributes", tuple(a.strip() for a in self.drop_attributes if a.strip()))
        if isinstance(self.fault_scope, str):  # type: ignore[unreachable]
            raise ValueError("fault_scope must be a sequence of entries, not one string")
        scope = tuple(" ".join(entry.split()) for entry in self.fault_scope if entry.strip())
        for entry in scope:
            parts = entry.split(" ")
            if len(parts) > 2 or (len(parts) == 2 and parts[0] not in _METHODS):
                raise ValueError(
                    f"fault_scope entry {entry!r} is not a resource type or a method and a resource type "
                    "(e.g. 'POST ContainerPermissions')"
                )
        object.__setattr__(self, "fault_scope", scope)

    def faults_apply(self, method: str, resource_type: str) -> bool:
        """Whether the random faults may hit a ``method`` request on ``resource_type`` (see ``fault_scope``)."""
        if not self.fault_scope:
            return True
        return resource_type in self.fault_scope or f"{method} {resource_type}" in self.fault_scope

    def __repr__(self) -> str:
        # Client secrets never appear in a repr: only the client ids do.
        return (
            f"EmulatorConfig(db_path={self.db_path!r}, clients={sorted(self.clients)!r}, "
            f"token_lifetime_s={self.token_lifetime_s}, page_size_cap={self.page_size_cap}, "
            f"latency_ms={self.latency_ms}, latency_jitter_ms={self.latency_jitter_ms}, "
            f"rate_limit_per_s={self.rate_limit_per_s}, announce_rate_limit={self.announce_rate_limit!r}, "
            f"fault_rate={self.fault_rate}, "
            f"unavailable_rate={self.unavailable_rate}, throttle_rate={self.throttle_rate}, "
            f"drop_rate={self.drop_rate}, fault_scope={self.fault_scope!r}, "
            f"absolute_endpoints={self.absolute_endpoints}, "
            f"refuse_attribute_path_patch={self.refuse_attribute_path_patch}, "
            f"refuse_member_filter_removal={self.refuse_member_filter_removal}, "
            f"drop_attributes={self.drop_attributes!r}, strict_literal_filters={self.strict_literal_filters}, "
            f"owner_rights={self.owner_rights}, seed={self.seed})"
        )
