"""What a SCIM call returns (:class:`ScimResult`) and what a client did (:class:`ClientStats`).

Kept apart from :mod:`.client` so the modules the client uses (look-ups, PATCH forms, paging) can build
results without importing the client."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .pacing import PacingSnapshot

__all__ = ["ClientStats", "ScimResult"]


@dataclass
class ScimResult:
    """The outcome of one SCIM call."""

    resource: dict[str, Any] | None
    status: int
    attempts: int = 1
    latency_s: float = 0.0
    adopted: bool = False
    """The create found the resource already there (lost answer or 409) and returns it."""
    already_done: bool = False
    """A DELETE answered 404, or a member-remove PATCH answered 400 noTarget."""
    etag: str | None = None
    """The answer's ``ETag`` header, else the resource's ``meta.version`` (for an ``If-Match`` precondition)."""

    @property
    def scim_id(self) -> str | None:
        """The resource's ``id``, when the answer carried one."""
        if self.resource is None:
            return None
        value = self.resource.get("id")
        return value if isinstance(value, str) else None


@dataclass
class ClientStats:
    """What one client did, for logs, metadata and benchmarks."""

    requests: int = 0
    """SCIM requests that got an HTTP answer (token requests excluded)."""
    retries: int = 0
    token_requests: int = 0
    adoptions: int = 0
    already_done: int = 0
    transport_errors: int = 0
    pages: int = 0
    replaced_by_put: int = 0
    """Changes sent as a PUT of the whole resource because the target refused every PATCH form."""
    retry_wait_s: float = 0.0
    """Sum of the waits chosen from ``Retry-After`` (backoffs without one not included)."""
    by_status: Counter[int] = field(default_factory=Counter)
    pacing: PacingSnapshot | None = None
    """Where the pacer stands (rate, concurrency, what was announced or learned)."""
