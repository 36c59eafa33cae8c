"""An access file over a small hand-built roster, and what the emulator holds of Delinea's PAM resources, for the
PAM engine tests."""

from __future__ import annotations

from typing import Any

from scim_pipeline.sync.cycle import CycleReport, run_cycle
from scim_pipeline.sync.pam.access import AccessFile, parse_access
from scim_pipeline.sync.state import ProvisioningState
from tests.sync.conftest import HandRoster, Target, make_roster, user

PRIVILEGED_DATA = "urn:ietf:params:scim:schemas:pam:1.0:PrivilegedData"
CONTAINER = "urn:ietf:params:scim:schemas:pam:1.0:Container"
PAM_TYPES = ("Containers", "ContainerPermissions", "PrivilegedData")


def roster() -> HandRoster:
    return make_roster(
        users=[user("ada"), user("bob"), user("cyd")],
        groups=["Vault Admins", "Auditors"],
        memberships=[("Vault Admins", "ada"), ("Auditors", "bob")],
    )


def access(*containers: dict[str, Any], frame: HandRoster | None = None) -> AccessFile:
    frame = frame if frame is not None else roster()
    return parse_access(
        containers,
        path="access.yaml",
        users=frame.users["key"].astype(str),
        groups=frame.groups["key"].astype(str),
    )


BASE = (
    {
        "name": "Production",
        "permissions": [
            {"group": "Vault Admins", "rights": ["Owner", "Edit"]},
            {"group": "Auditors", "rights": ["View"]},
            {"user": "cyd", "rights": ["Add Secret", "View"]},
        ],
    },
    {"name": "Staging", "permissions": [{"group": "Auditors", "rights": "View"}]},
)


async def cycle(
    target: Target, state: ProvisioningState, file: AccessFile, *, frame: HandRoster | None = None, **options: Any
) -> CycleReport:
    return await run_cycle(
        target.client, state, frame if frame is not None else roster(), run_id="run", access=file, **options
    )


def permissions_on_target(target: Target) -> set[tuple[str, str, tuple[str, ...]]]:
    dump = target.emulator.store.dump()
    containers = {c["id"]: c["name"] for c in dump["Containers"]}
    found = set()
    for permission in dump["ContainerPermissions"]:
        principal = permission.get("group") or permission.get("user")
        found.add((containers[permission["container"]["value"]], principal["display"], tuple(permission["rights"])))
    return found


def pam_writes(target: Target) -> list[tuple[str, str]]:
    return [(r.method, r.resource_type) for r in target.writes() if r.resource_type in PAM_TYPES]
