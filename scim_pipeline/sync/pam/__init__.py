"""Delinea's PAM resources as kinds of the one sync engine: containers, container permissions and privileged-data
placements, planned from the access file (:mod:`~scim_pipeline.sync.pam.access`) and executed by the engine's
executor within Delinea's rules.

- **Reading** (:mod:`~scim_pipeline.sync.pam.read`, in the planning step, so the guards see the whole plan): each
  container of the access file (and each one we manage) is read once — ``GET /Containers/{id}`` when its id is
  known, else ``name eq "…"`` — and its permissions with ONE filtered request, ``container.value eq "<id>"`` (an
  unfiltered list is refused). Privileged data has no container filter: it is read in one paged listing, only when
  the file places some.
- **Containers** are found and created by name only. One that would need renaming (its name on the target differs
  from the file's) or deleting (it left the access file) is reported as drift to fix by hand, never attempted.
- **Permissions** are added and deleted, never edited in place: other rights for a principal are a delete and an
  add. We delete only what we added (or adopted), and never what a rejected row names.
- **Privileged data** is attached to or detached from containers (a PATCH of ``container``), never created.
- **403** (the service account lacks Owner on containers) is reported once, with what to grant, and stops the
  PAM requests of the cycle: it is never retried.
- **Execution** (:mod:`~scim_pipeline.sync.pam.phases`) goes through the cycle's executor: the same worker pool,
  circuit breaker, escrow (a container, permission slot or placement failing repeatedly is held back with its
  reason), audit rows, progress and state batches as the users'.

The rooms: ``access`` (the access file), ``managed`` (what we manage), ``read`` (reading the target), ``plan`` (the
pandas change sets and the permission guard), ``report`` (:class:`PamReport`, the access snapshot), ``phases``
(the cycle's PAM steps). Nothing here imports the cycle.
"""

from scim_pipeline.sync.pam.managed import ManagedPam, ManagedPermission
from scim_pipeline.sync.pam.phases import (
    PAM_PHASES,
    ContainerProvisioning,
    PamCycle,
    PermissionProvisioning,
    PlacementProvisioning,
    plan_pam,
    principal_ids_of,
)
from scim_pipeline.sync.pam.plan import PAM_KINDS, PLACEHOLDER_ID, PamPlan, permission_guard, plan_access
from scim_pipeline.sync.pam.read import FORBIDDEN_FIX, TargetAccess, TargetContainer, read_target_access
from scim_pipeline.sync.pam.report import PamReport

__all__ = [
    "FORBIDDEN_FIX",
    "PAM_KINDS",
    "PAM_PHASES",
    "PLACEHOLDER_ID",
    "ContainerProvisioning",
    "ManagedPam",
    "ManagedPermission",
    "PamCycle",
    "PamPlan",
    "PamReport",
    "PermissionProvisioning",
    "PlacementProvisioning",
    "TargetAccess",
    "TargetContainer",
    "permission_guard",
    "plan_access",
    "plan_pam",
    "principal_ids_of",
    "read_target_access",
]
