"""The staging workflow check behind ``scim-pipeline verify-workflows``.

Delinea asks customers to verify the common workflows in a non-production environment before the first sync. This
runs them, through the same client and profile rules as the sync, on throwaway objects whose names start with
:data:`PREFIX`: create a user → update attributes → create a group → assign the user → remove and add the member →
disable (``active=false``) → delete the user (and the group, where the profile allows). Each write is read back with a
GET and compared. Under the Delinea profile it also checks the PAM rights the service account needs (reading
containers and their permissions) and, only when asked, adds and deletes a permission on a throwaway container.

Safe to re-run: it starts by removing what an interrupted earlier run left (found by the prefix, with the filters the
profile allows, and matched on the client by that prefix), and it always cleans up after itself. Nothing whose name
does not start with the prefix is ever changed. What SCIM cannot delete — groups under the Delinea profile (no group
DELETE), the throwaway container (containers have no DELETE) — is emptied, left and named in the report.

Two runs at once against one tenant would remove each other's objects as leftovers: run one at a time.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from pydantic import ValidationError
from scim2_models import Email, Group, Name

from .check import CONTAINER_RIGHTS
from .client import ScimClient
from .errors import AuthenticationError, ConfigurationError, ScimForbidden, ScimNotFound, ScimPipelineError
from .filters import compare_filter, eq_filter, literal
from .lookup import attribute_value
from .models import Container, ContainerPermission, ResourceLink, ScimUser, resource_payload
from .profiles import Operation
from .settings import ConnectionSettings

__all__ = [
    "CONTAINER_NAME",
    "DEFAULT_USER_DOMAIN",
    "PREFIX",
    "StepResult",
    "VerifyReport",
    "VerifyStep",
    "run_verify",
]

PREFIX = "scim-pipeline-verify-"
"""Every object this check creates has a name (userName, displayName, container name) starting with this; leftovers
are recognised by it, and nothing without it is ever touched."""
CONTAINER_NAME = f"{PREFIX}container"
"""The one throwaway container of ``--with-containers``: SCIM cannot delete containers, so every run reuses it."""
DEFAULT_USER_DOMAIN = "example.com"
"""The throwaway users' domain (``scim-pipeline-verify-<random>@example.com``): reserved for documentation (RFC
2606), so it can never be a real person's address. A tenant that only accepts its own login suffixes needs
``--user-domain``."""
PERMISSION_RIGHTS = ("View",)
"""The right the throwaway group is given on the throwaway container: the least of the seed's rights."""
_GRANT = (
    f"grant the service account Owner-level rights ({', '.join(CONTAINER_RIGHTS)}) on the containers it manages; "
    "a 403 means it lacks them"
)
_SHOWN = 5
"""Names listed per kind of leftover, the rest counted."""


class StepResult(StrEnum):
    PASS = "PASS"  # noqa: S105 - a result, not a password
    FAIL = "FAIL"
    SKIP = "skip"
    """Not run because an earlier step it depends on failed, or the profile does not offer it."""
    INFO = "info"


@dataclass(frozen=True)
class VerifyStep:
    """One line of the report."""

    name: str
    result: StepResult
    detail: str


@dataclass
class VerifyReport:
    """The result of :func:`run_verify`: the steps in order, what was removed, what stays on the target."""

    base_url: str
    profile: str
    run_name: str
    """The throwaway name of this run (``scim-pipeline-verify-<random>``)."""
    label: str | None = None
    """A line printed above the table (demo mode says it runs on the embedded emulator)."""
    steps: list[VerifyStep] = field(default_factory=list)
    removed_leftovers: list[str] = field(default_factory=list)
    """Objects of earlier runs removed before this one started (``Users scim-pipeline-verify-…``)."""
    left_behind: list[str] = field(default_factory=list)
    """Objects that stay on the target because SCIM cannot delete them, each with what to do."""

    @property
    def passed(self) -> bool:
        """True when no step failed (and at least one passed)."""
        results = [step.result for step in self.steps]
        return StepResult.PASS in results and StepResult.FAIL not in results

    def add(self, name: str, result: StepResult, detail: str) -> None:
        self.steps.append(VerifyStep(name, result, detail))

    def render(self) -> str:
        """A plain-text table, then the leftovers removed and what stays."""
        width = max([len(step.name) for step in self.steps] + [4])
        lines = [f"SCIM workflow verification — {self.base_url} (profile {self.profile})"]
        if self.label:
            lines.append(self.label)
        lines += [
            f"throwaway objects: {self.run_name}* (prefix {PREFIX})",
            "",
            f"{'step'.ljust(width)}  result  detail",
            f"{'-' * width}  ------  {'-' * 40}",
        ]
        lines += [f"{step.name.ljust(width)}  {step.result.value.ljust(6)}  {step.detail}" for step in self.steps]
        if self.removed_leftovers:
            lines += ["", "Removed before starting (left by an earlier run):"]
            lines += [f"  {name}" for name in self.removed_leftovers]
        if self.left_behind:
            lines += ["", "Left on the target (SCIM cannot delete them):"]
            lines += [f"  {name}" for name in self.left_behind]
        lines += ["", "PASSED" if self.passed else "FAILED"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "target": self.base_url,
            "profile": self.profile,
            "run_name": self.run_name,
            "prefix": PREFIX,
            "label": self.label,
            "passed": self.passed,
            "steps": [{"step": s.name, "result": s.result.value, "detail": s.detail} for s in self.steps],
            "removed_leftovers": list(self.removed_leftovers),
            "left_behind": list(self.left_behind),
        }


class _Mismatch(Exception):
    """A write was accepted but its read-back shows something else."""


async def run_verify(
    settings: ConnectionSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    with_containers: bool = False,
    user_domain: str = DEFAULT_USER_DOMAIN,
    label: str | None = None,
) -> VerifyReport:
    """Run the workflows on throwaway objects and report each step; never raises for a server-side problem.

    ``with_containers`` (Delinea profile) also creates the throwaway container :data:`CONTAINER_NAME` when it is
    not there yet — it cannot be deleted through SCIM — and adds and deletes a permission of the throwaway group on
    it. ``user_domain`` is the domain of the throwaway userName and e-mail address.
    """
    run_name = f"{PREFIX}{secrets.token_hex(4)}"
    user_name = f"{run_name}@{user_domain}"
    try:
        Email(value=user_name)
    except ValidationError:
        raise ConfigurationError(f"--user-domain: {user_domain!r} is not a domain an e-mail address can use") from None
    report = VerifyReport(base_url=settings.base_url, profile=settings.profile, run_name=run_name, label=label)
    async with ScimClient(settings, transport=transport) as client:
        if client.auth is None:
            report.add("token", StepResult.FAIL, "no client credentials (SCIM_CLIENT_ID/SECRET)")
            return report
        try:
            await client.authenticate()
        except AuthenticationError as error:
            report.add("token", StepResult.FAIL, str(error))
            return report
        report.add("token", StepResult.PASS, f"obtained from {settings.token_url}")
        run = _Run(client, report, run_name, user_name, settings.email_form)
        try:
            await run.remove_leftovers()
            await run.workflows(with_containers=with_containers)
        finally:
            await run.clean_up()
    return report


def _ours(name: object) -> bool:
    """Whether a name marks an object of this check (case-insensitive, like userName and displayName)."""
    return isinstance(name, str) and name.casefold().startswith(PREFIX)


def _members(group: Mapping[str, Any]) -> list[str]:
    members = attribute_value(group, "members")
    if not isinstance(members, list):
        return []
    return [str(m["value"]) for m in members if isinstance(m, dict) and m.get("value") is not None]


def _listed(kind: str, names: list[str]) -> str:
    """``kind (3): a, b, c`` — the first few names, the rest counted."""
    shown = ", ".join(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{kind} ({len(names)}): {shown}{more}"


class _Run:
    """One run: the throwaway objects it made (ids), the steps it reported."""

    def __init__(
        self, client: ScimClient, report: VerifyReport, run_name: str, user_name: str, email_form: str
    ) -> None:
        self.client = client
        self.report = report
        self.run_name = run_name
        self.user_name = user_name
        self.email_form = email_form
        self.profile = client.profile
        self.user_id: str | None = None
        self.group_id: str | None = None
        self.container_id: str | None = None
        self.permission_id: str | None = None
        self.group_emptied = False

    # -- reporting ------------------------------------------------------------------------------

    def can(self, resource_type: str, operation: Operation) -> bool:
        return (
            resource_type in self.profile.resource_types and operation in self.profile.rules(resource_type).operations
        )

    async def step(self, name: str, action: Callable[[], Awaitable[str]], *, pam: bool = False) -> bool:
        """Run one step and report it: its detail when it passes, the reason when it fails."""
        try:
            detail = await action()
        except _Mismatch as mismatch:
            self.report.add(name, StepResult.FAIL, f"read back: {mismatch}")
            return False
        except ScimForbidden as error:
            self.report.add(name, StepResult.FAIL, f"{error}; {_GRANT}" if pam else str(error))
            return False
        except ScimPipelineError as error:
            self.report.add(name, StepResult.FAIL, str(error))
            return False
        self.report.add(name, StepResult.PASS, detail)
        return True

    def skip(self, name: str, why: str) -> None:
        self.report.add(name, StepResult.SKIP, why)

    # -- reading back ---------------------------------------------------------------------------

    async def read(self, resource_type: str, scim_id: str) -> dict[str, Any]:
        resource = (await self.client.get(resource_type, scim_id)).resource
        if resource is None:
            raise _Mismatch(f"GET /{resource_type}/{scim_id} answered without a body")
        return resource

    async def read_gone(self, resource_type: str, scim_id: str) -> None:
        try:
            await self.client.get(resource_type, scim_id)
        except ScimNotFound:
            return
        raise _Mismatch(f"GET /{resource_type}/{scim_id} still finds it after the DELETE")

    async def expect(self, resource_type: str, scim_id: str, wanted: Mapping[str, object]) -> None:
        """One GET; each attribute path of ``wanted`` must read back as its value."""
        resource = await self.read(resource_type, scim_id)
        for path, value in wanted.items():
            found = attribute_value(resource, path)
            if not _same(found, value):
                raise _Mismatch(f"{path} is {found!r}, expected {value!r}")

    def membership(self) -> tuple[str, str]:
        """The throwaway group and user, once both exist."""
        assert self.group_id is not None
        assert self.user_id is not None
        return self.group_id, self.user_id

    async def expect_member(self, present: bool) -> None:
        group_id, user_id = self.membership()
        members = _members(await self.read("Groups", group_id))
        if (user_id in members) != present:
            raise _Mismatch(f"the user is {'not ' if present else ''}among the group's members")

    # -- leftovers ------------------------------------------------------------------------------

    async def find_ours(self, resource_type: str, attribute: str) -> list[dict[str, Any]]:
        """Objects whose ``attribute`` starts with the prefix: an allowed ``co`` filter, then the prefix matched here
        (a name merely containing it, or a server that ignores the filter, never makes an object ours)."""
        found = await self.client.search(resource_type, str(compare_filter(attribute, "co", PREFIX)))
        return [resource for resource in found if _ours(attribute_value(resource, attribute))]

    async def remove_leftovers(self) -> None:
        removed: list[str] = []
        left: list[str] = []

        async def remove() -> str:
            users = await self.find_ours("Users", "userName")
            groups = await self.find_ours("Groups", "displayName")
            user_ids = {str(u["id"]) for u in users if u.get("id")}
            await self.remove_leftover_permissions(user_ids, {str(g["id"]) for g in groups if g.get("id")}, removed)
            for user in users:
                name = str(attribute_value(user, "userName"))
                if self.can("Users", Operation.DELETE):
                    await self.client.delete("Users", str(user["id"]))
                    removed.append(f"Users {name}")
                elif attribute_value(user, "active") is not False:
                    await self.client.patch("Users", str(user["id"]), [_replace("active", False)])
                    removed.append(f"Users {name}: disabled (the profile has no user DELETE)")
            for group in groups:
                name = str(attribute_value(group, "displayName"))
                if self.can("Groups", Operation.DELETE):
                    await self.client.delete("Groups", str(group["id"]))
                    removed.append(f"Groups {name}")
                    continue
                # Deleting a user removes it from its groups on Delinea; a target that keeps the member loses it here.
                if await self.empty_group(str(group["id"]), user_ids):
                    removed.append(f"Groups {name}: throwaway members removed")
                left.append(name)
            if not removed:
                return "none found" + (f"; {_listed('empty groups of earlier runs kept', left)}" if left else "")
            return f"removed {len(removed)} object(s) left by an earlier run (listed below)"

        await self.step("remove leftovers", remove)
        self.report.removed_leftovers += removed
        if left:
            self.report.left_behind.append(
                f"{_listed('Groups of earlier runs', left)} — emptied; the {self.profile.name} profile has no group "
                "DELETE: delete them by hand in the target if you wish"
            )

    async def remove_leftover_permissions(self, user_ids: set[str], group_ids: set[str], removed: list[str]) -> None:
        """Permissions on the throwaway container held by throwaway users or groups (an interrupted
        ``--with-containers`` run); nothing when the container is not there or cannot be read."""
        if not self.can("ContainerPermissions", Operation.DELETE):
            return
        try:
            container = await self.client.find_one("Containers", "name", CONTAINER_NAME)
            if container is None or not container.get("id"):
                return
            permissions = await self.client.search(
                "ContainerPermissions", str(eq_filter("container.value", str(container["id"])))
            )
        except ScimForbidden:
            return  # the PAM steps report the missing rights
        for permission in permissions:
            holder = _holder(permission)
            if (
                holder is None
                or not (holder[1] in user_ids | group_ids or _ours(holder[2]))
                or not permission.get("id")
            ):
                continue
            await self.client.delete("ContainerPermissions", str(permission["id"]))
            removed.append(f"ContainerPermissions {holder[0]} {holder[2] or holder[1]} on {CONTAINER_NAME}")

    async def empty_group(self, group_id: str, ours: set[str]) -> bool:
        """Remove from a throwaway group the members that are throwaway users; whether any was removed."""
        members = [m for m in _members(await self.read("Groups", group_id)) if m in ours]
        for member in members:
            await self.client.patch("Groups", group_id, [_remove_member(member)])
        return bool(members)

    # -- the workflows --------------------------------------------------------------------------

    async def workflows(self, *, with_containers: bool) -> None:
        if await self.step("create user", self.create_user):
            await self.step("update user", self.update_user)
        if not await self.step("create group", self.create_group) or self.user_id is None:
            self.skip("assign user to group", f"not run: the {'group' if self.user_id else 'user'} was not created")
        elif await self.step("assign user to group", self.assign):
            await self.step("remove member", self.remove_member)
            await self.step("add member again", self.add_member_again)
        if "Containers" in self.profile.resource_types:
            await self.pam(with_containers=with_containers)
        if self.user_id is None:
            self.skip("disable user, delete user", "not run: the user was not created")
        else:
            await self.step("disable user", self.disable_user)
            if self.can("Users", Operation.DELETE):
                await self.step("delete user", self.delete_user)
            else:
                self.skip("delete user", f"the {self.profile.name} profile has no user DELETE: left disabled")
        if self.group_id is not None:
            if self.can("Groups", Operation.DELETE):
                await self.step("delete group", self.delete_group)
            else:
                await self.step("empty group", self.leave_group_empty)

    async def create_user(self) -> str:
        email = Email(value=self.user_name, type="work" if self.email_form == "typed" else None, primary=True)
        user = ScimUser(
            user_name=self.user_name,
            display_name=f"{self.run_name} user",
            name=Name(given_name="SCIM Pipeline", family_name="Verify"),
            active=True,
            emails=[email],
        )
        created = await self.client.create("Users", resource_payload(user))
        if created.scim_id is None:
            raise _Mismatch("the POST answer carries no id")
        self.user_id = created.scim_id
        await self.expect("Users", self.user_id, {"userName": self.user_name, "active": True})
        return f"POST /Users {self.user_name}; GET: userName, active=true"

    async def update_user(self) -> str:
        assert self.user_id is not None
        # A surname change, as an HR update brings: the sub-attribute and the display name together.
        wanted = {"name.familyName": "Verify-Updated", "displayName": f"{self.run_name} user (updated)"}
        await self.client.patch("Users", self.user_id, [_replace(path, value) for path, value in wanted.items()])
        await self.expect("Users", self.user_id, wanted)
        return "PATCH name.familyName, displayName; GET: the new values"

    async def create_group(self) -> str:
        created = await self.client.create("Groups", resource_payload(Group(display_name=self.run_name)))
        if created.scim_id is None:
            raise _Mismatch("the POST answer carries no id")
        self.group_id = created.scim_id
        await self.expect("Groups", self.group_id, {"displayName": self.run_name})
        return f"POST /Groups {self.run_name}; GET: displayName"

    async def assign(self) -> str:
        group_id, user_id = self.membership()
        await self.client.patch("Groups", group_id, [_add_member(user_id)])
        await self.expect_member(present=True)
        return "PATCH add members; GET: the user is a member"

    async def remove_member(self) -> str:
        group_id, user_id = self.membership()
        await self.client.patch("Groups", group_id, [_remove_member(user_id)])
        await self.expect_member(present=False)
        return "PATCH remove members[value eq …]; GET: the user is not a member"

    async def add_member_again(self) -> str:
        group_id, user_id = self.membership()
        await self.client.patch("Groups", group_id, [_add_member(user_id)])
        await self.expect_member(present=True)
        return "PATCH add members; GET: the user is a member again"

    async def disable_user(self) -> str:
        assert self.user_id is not None
        await self.client.patch("Users", self.user_id, [_replace("active", False)])
        await self.expect("Users", self.user_id, {"active": False})
        return "PATCH active=false (soft delete); GET: active=false"

    async def delete_user(self) -> str:
        assert self.user_id is not None
        await self.client.delete("Users", self.user_id)
        await self.read_gone("Users", self.user_id)
        self.user_id = None
        return "DELETE; GET: 404"

    async def delete_group(self) -> str:
        assert self.group_id is not None
        await self.client.delete("Groups", self.group_id)
        await self.read_gone("Groups", self.group_id)
        self.group_id = None
        return "DELETE; GET: 404"

    async def leave_group_empty(self) -> str:
        """No group DELETE: the deleted user must have left the group (Delinea documents the cascade); a member
        still there is removed. The empty group stays, named in the report."""
        assert self.group_id is not None
        members = _members(await self.read("Groups", self.group_id))
        still = [m for m in members if m == self.user_id]
        if still:
            await self.client.patch("Groups", self.group_id, [_remove_member(still[0])])
        if _members(await self.read("Groups", self.group_id)):
            raise _Mismatch("the group still has members")
        self.group_emptied = True
        how = "the user removed by PATCH" if still else "the deleted user left it"
        return f"GET: no members ({how}); the {self.profile.name} profile has no group DELETE: left, see below"

    # -- PAM ------------------------------------------------------------------------------------

    async def pam(self, *, with_containers: bool) -> None:
        """The rights the service account needs on containers, and (asked for) a permission added and deleted."""
        readable = await self.step("PAM: read containers", self.read_containers, pam=True)
        readable = await self.step("PAM: read container permissions", self.read_permissions, pam=True) and readable
        if not with_containers:
            self.report.add(
                "PAM: container permission",
                StepResult.INFO,
                f"not run: --with-containers creates the container {CONTAINER_NAME} (SCIM cannot delete it; "
                "every run reuses it) and adds and deletes a permission on it",
            )
            return
        if not readable:
            self.skip("PAM: container permission", "not run: the service account cannot read containers")
            return
        if await self.step("PAM: throwaway container", self.throwaway_container, pam=True):
            if self.group_id is None:
                self.skip("PAM: add permission", "not run: the group was not created")
            elif await self.step("PAM: add permission", self.add_permission, pam=True):
                await self.step("PAM: delete permission", self.delete_permission, pam=True)

    async def read_containers(self) -> str:
        found = await self.find_ours("Containers", "name")
        return f"GET /Containers (name co {literal(PREFIX)}): answered, {len(found)} throwaway container(s)"

    async def read_permissions(self) -> str:
        holder = ("group.value", self.group_id) if self.group_id else ("user.value", secrets.token_hex(16))
        await self.client.search("ContainerPermissions", str(eq_filter(*holder)))
        return f"GET /ContainerPermissions ({holder[0]} eq …): answered"

    async def throwaway_container(self) -> str:
        found = await self.client.find_one("Containers", "name", CONTAINER_NAME)
        if found is not None and found.get("id"):
            self.container_id = str(found["id"])
            how = "found from an earlier run (reused)"
        else:
            created = await self.client.create("Containers", resource_payload(Container(name=CONTAINER_NAME)))
            if created.scim_id is None:
                raise _Mismatch("the POST answer carries no id")
            self.container_id = created.scim_id
            again = await self.client.find_one("Containers", "name", CONTAINER_NAME)
            if again is None or again.get("id") != self.container_id:
                raise _Mismatch(f"a search by name does not find the container {CONTAINER_NAME}")
            how = "POST /Containers; found by name"
        self.report.left_behind.append(
            f"Containers {CONTAINER_NAME} — SCIM cannot delete containers: the next run reuses it; delete it by hand "
            "in Secret Server when you no longer need it"
        )
        return f"{CONTAINER_NAME}: {how}"

    async def add_permission(self) -> str:
        assert self.container_id is not None
        assert self.group_id is not None
        permission = ContainerPermission(
            container=ResourceLink(value=self.container_id),
            group=ResourceLink(value=self.group_id, display=self.run_name),
            rights=list(PERMISSION_RIGHTS),
        )
        created = await self.client.create("ContainerPermissions", resource_payload(permission))
        if created.scim_id is None:
            raise _Mismatch("the POST answer carries no id")
        self.permission_id = created.scim_id
        if self.permission_id not in await self.permission_ids():
            raise _Mismatch("a search by container does not find the group's permission")
        return f"POST /ContainerPermissions (group, {', '.join(PERMISSION_RIGHTS)}); found by container.value"

    async def delete_permission(self) -> str:
        assert self.permission_id is not None
        await self.client.delete("ContainerPermissions", self.permission_id)
        if self.permission_id in await self.permission_ids():
            raise _Mismatch("a search by container still finds the permission after the DELETE")
        self.permission_id = None
        return "DELETE; a search by container no longer finds it"

    async def permission_ids(self) -> set[str]:
        assert self.container_id is not None
        found = await self.client.search("ContainerPermissions", str(eq_filter("container.value", self.container_id)))
        return {str(p["id"]) for p in found if p.get("id")}

    # -- clean-up -------------------------------------------------------------------------------

    async def clean_up(self) -> None:
        """Remove whatever this run made that is still there — after a failed step as after a passing run — then
        search by the prefix to prove nothing deletable is left."""
        removed: list[str] = []

        async def clean() -> str:
            failures: list[str] = []
            for what, remove in self.removals():
                try:
                    await remove()
                    removed.append(what)
                except ScimPipelineError as error:
                    failures.append(f"{what}: {error}")
            if failures:
                raise ScimPipelineError("could not remove " + "; ".join(failures) + " (the next run removes them)")
            remaining = await self.find_ours("Users", "userName")
            groups = await self.find_ours("Groups", "displayName")
            if self.can("Groups", Operation.DELETE):
                remaining += groups
            if remaining:
                names = [str(attribute_value(r, "userName") or attribute_value(r, "displayName")) for r in remaining]
                raise _Mismatch(f"still on the target: {_listed('objects', names)}")
            done = f"removed {', '.join(removed)}" if removed else "nothing of this run was left"
            kinds = "user or group" if self.can("Groups", Operation.DELETE) else "user"
            return f"{done}; a search by the prefix finds no throwaway {kinds}"

        await self.step("clean up", clean)
        if self.group_id is not None and not self.can("Groups", Operation.DELETE):
            self.report.left_behind.append(
                f"Groups {self.run_name} — emptied; the {self.profile.name} profile has no group DELETE: the next "
                "run lists it; delete it by hand in the target if you wish"
            )

    def removals(self) -> Iterable[tuple[str, Callable[[], Awaitable[Any]]]]:
        """What is left of this run, in a safe order: the permission, then the group, then the user."""
        if self.permission_id is not None:
            permission_id = self.permission_id
            yield "the permission", lambda: self.client.delete("ContainerPermissions", permission_id)
        if self.group_id is not None and self.can("Groups", Operation.DELETE):
            group_id = self.group_id
            yield f"group {self.run_name}", lambda: self.client.delete("Groups", group_id)
        elif self.group_id is not None and not self.group_emptied and self.user_id is not None:
            group_id, user_id = self.group_id, self.user_id
            yield f"the user from group {self.run_name}", lambda: self.empty_group(group_id, {user_id})
        if self.user_id is not None:
            user_id = self.user_id
            if self.can("Users", Operation.DELETE):
                yield f"user {self.user_name}", lambda: self.client.delete("Users", user_id)
            else:
                yield (
                    f"user {self.user_name} (disabled)",
                    lambda: self.client.patch("Users", user_id, [_replace("active", False)]),
                )


def _same(found: object, wanted: object) -> bool:
    if isinstance(wanted, bool):
        return found is wanted or (isinstance(found, str) and found.strip().lower() == str(wanted).lower())
    if isinstance(wanted, str) and isinstance(found, str):
        return found.casefold() == wanted.casefold()
    return found == wanted


def _holder(permission: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    """``(kind, id, display)`` of the user or group a permission is held by."""
    for kind in ("group", "user"):
        link = attribute_value(permission, kind)
        if isinstance(link, Mapping) and link.get("value") is not None:
            display = link.get("display")
            return kind, str(link["value"]), display if isinstance(display, str) else None
    return None


def _replace(path: str, value: object) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def _add_member(user_id: str) -> dict[str, Any]:
    return {"op": "add", "path": "members", "value": [{"value": user_id}]}


def _remove_member(user_id: str) -> dict[str, Any]:
    return {"op": "remove", "path": f"members[value eq {literal(user_id)}]"}
