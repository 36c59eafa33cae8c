"""Reading the target within Delinea's rules, in the planning step (so the guards see the whole plan).

Each container of the access file (and each one we manage) is read once — ``GET /Containers/{id}`` when its id is
known, else ``name eq "…"`` — and its permissions with ONE filtered request, ``container.value eq "<id>"`` (an
unfiltered list is refused). Privileged data has no container filter: it is read in one paged listing, only when
the file places some (or we placed some). The first 403 stops the cycle's PAM requests (:class:`ForbiddenStop`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scim_pipeline.scim.errors import ScimForbidden, ScimHTTPError, ScimNotFound, ScimPipelineError
from scim_pipeline.scim.filters import eq_filter
from scim_pipeline.scim.models import parse_resource
from scim_pipeline.sync.execute.executor import Failure, ForbiddenStop
from scim_pipeline.sync.pam.access import AccessFile
from scim_pipeline.sync.pam.managed import ManagedPam

if TYPE_CHECKING:
    from scim_pipeline.scim.client import ScimClient

__all__ = ["FORBIDDEN_FIX", "PamReads", "TargetAccess", "TargetContainer", "read_target_access"]

FORBIDDEN_FIX = (
    "the service account lacks Owner-level rights on containers (HTTP 403): grant it Owner, Edit, Add Secret and "
    "View on the containers it manages (the seed's minimum rights; its role also needs Administer Secret Server "
    "Folders). Not retried; the next cycle tries again."
)


@dataclass
class TargetContainer:
    scim_id: str
    name: str


@dataclass
class TargetAccess:
    """What one cycle read of the target: containers by the file's (or our) names, their permissions, and the
    privileged data when it was needed."""

    containers: dict[str, TargetContainer | None] = field(default_factory=dict)
    """name_norm → the container found (None: not on the target)."""
    permissions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """container id → its permissions as read."""
    privileged_data: list[dict[str, Any]] | None = None
    requests: int = 0
    forbidden: Failure | None = None
    failures: list[Failure] = field(default_factory=list)
    """Reads that failed (other than a 403): nothing is planned for what they would have read."""


class _Stopped(Exception):
    """A 403 was seen: the PAM requests of this cycle stop."""


@dataclass
class PamReads:
    """The PAM reads of one cycle: counted, and stopped for good at the first 403 (``stop``, which the executor's
    PAM calls share)."""

    client: ScimClient
    stop: ForbiddenStop = field(default_factory=lambda: ForbiddenStop(FORBIDDEN_FIX))
    requests: int = 0

    async def call(self, resource_type: str, op: str, key: str, request: Callable[[], Awaitable[Any]]) -> Any:
        if self.stop.tripped:
            raise _Stopped
        self.requests += 1
        try:
            return await request()
        except ScimForbidden as error:
            self.stop.trip(resource_type, op, key, error)
            raise _Stopped from None


async def read_target_access(
    client: ScimClient,
    access: AccessFile,
    managed: ManagedPam,
    *,
    reads: PamReads | None = None,
) -> TargetAccess:
    """Read, within the profile's rules, each container of the access file and each one we manage, the permissions
    of every container found (one filtered request each), and the privileged data when placements need it."""
    reads = reads or PamReads(client)
    result = TargetAccess()
    wanted: dict[str, tuple[str, str | None]] = {}
    for name_norm, (name, scim_id) in managed.containers.items():
        wanted[name_norm] = (name, scim_id)
    for container in access.containers:
        known = managed.containers.get(container.name_norm)
        wanted[container.name_norm] = (container.name, known[1] if known else container.scim_id)

    async def read_container(name_norm: str, name: str, scim_id: str | None) -> None:
        try:
            await read_one(name_norm, name, scim_id)
        except ScimPipelineError as error:
            status = error.status if isinstance(error, ScimHTTPError) else None
            result.failures.append(Failure("Containers", "read", name, status, None, str(error)))

    async def read_one(name_norm: str, name: str, scim_id: str | None) -> None:
        found: dict[str, Any] | None = None
        if scim_id is not None:
            try:
                found = (
                    await reads.call("Containers", "get", name, lambda: client.get("Containers", scim_id))
                ).resource
            except ScimNotFound:
                found = None
        if found is None:
            found = await reads.call("Containers", "find", name, lambda: client.find_one("Containers", "name", name))
        if found is None or not isinstance(found.get("id"), str):
            result.containers[name_norm] = None
            return
        model = parse_resource("Containers", found)
        target = TargetContainer(scim_id=str(model.id), name=str(getattr(model, "name", None) or name))
        permission_filter = str(eq_filter("container.value", target.scim_id))
        permissions = await reads.call(
            "ContainerPermissions",
            "read",
            name,
            lambda: client.search("ContainerPermissions", permission_filter),
        )
        # Known only once its permissions are read: a container half read is not planned for.
        result.permissions[target.scim_id] = permissions
        result.containers[name_norm] = target

    try:
        pending = [(n, name, i) for n, (name, i) in wanted.items()]
        # The first read alone: a 403 (no Owner rights) then stops the cycle's PAM requests after one request.
        for first in pending[:1]:
            await read_container(*first)
        await asyncio.gather(*(read_container(*each) for each in pending[1:]))
        if access.placements or managed.placements:
            try:
                result.privileged_data = await reads.call(
                    "PrivilegedData", "read", "(all)", lambda: client.search("PrivilegedData")
                )
            except ScimPipelineError as error:
                status = error.status if isinstance(error, ScimHTTPError) else None
                result.failures.append(Failure("PrivilegedData", "read", "(all)", status, None, str(error)))
    except _Stopped:
        pass
    result.requests = reads.requests
    result.forbidden = reads.stop.failure
    return result
