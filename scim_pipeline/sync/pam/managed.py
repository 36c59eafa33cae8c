"""What we manage of Delinea's PAM resources, as the state store records it: containers by name, the permissions we
added or adopted, the privileged data we placed. Rows that only count failures (escrow) are not managed objects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from scim_pipeline.sync.state import ProvisioningState
from scim_pipeline.sync.state.schema import managed_containers, managed_permissions, managed_placements

__all__ = ["ManagedPam", "ManagedPermission"]


@dataclass(frozen=True)
class ManagedPermission:
    container_id: str
    principal_type: str
    principal_key_norm: str
    principal_key: str
    principal_id: str
    rights: frozenset[str]
    scim_id: str


@dataclass
class ManagedPam:
    """The containers, permissions and placements the state store says we manage."""

    containers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """name_norm → (name, SCIM id)."""
    permissions: list[ManagedPermission] = field(default_factory=list)
    placements: dict[str, tuple[str, str]] = field(default_factory=dict)
    """data id → (data key, container id)."""

    @classmethod
    def load(cls, state: ProvisioningState) -> ManagedPam:
        with state.reading() as conn:
            containers = conn.execute(
                sa.select(
                    managed_containers.c.name_norm, managed_containers.c.name, managed_containers.c.scim_id
                ).where(managed_containers.c.scim_id.is_not(None))
            ).all()
            permissions = conn.execute(
                sa.select(
                    managed_permissions.c.container_id,
                    managed_permissions.c.principal_type,
                    managed_permissions.c.principal_key_norm,
                    managed_permissions.c.principal_key,
                    managed_permissions.c.principal_id,
                    managed_permissions.c.rights,
                    managed_permissions.c.scim_id,
                ).where(managed_permissions.c.scim_id.is_not(None))
            ).all()
            placements = conn.execute(
                sa.select(
                    managed_placements.c.data_id, managed_placements.c.data_key, managed_placements.c.container_id
                ).where(managed_placements.c.container_id.is_not(None))
            ).all()
        return cls(
            containers={str(n): (str(name), str(i)) for n, name, i in containers},
            permissions=[
                ManagedPermission(str(c), str(t), str(kn), str(k), str(p), frozenset(json.loads(r)), str(s))
                for c, t, kn, k, p, r, s in permissions
            ],
            placements={str(d): (str(k), str(c)) for d, k, c in placements},
        )

    def container_names(self) -> dict[str, str]:
        """SCIM id → name of the containers we manage."""
        return {scim_id: name for name, scim_id in self.containers.values()}
