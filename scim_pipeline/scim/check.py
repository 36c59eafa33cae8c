"""The connection check behind ``scim-pipeline check``: token, discovery, one harmless request per
resource type, printed as a pass/fail table. It never raises for a server-side problem: every
failure becomes a failing row with a one-line reason.

Users and Groups are always probed — whatever /ResourceTypes lists — and the check fails when
either cannot be. The PATCH forms the target accepts are shown: those already known (quirks kept
from earlier runs), and, only when asked (``write_probes``) and the profile allows creating,
patching and deleting, those found by patching objects the check creates and deletes; otherwise
"not probed". PATCH form rows never fail the check."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from .client import ScimClient
from .discovery import ServerCapabilities, discover
from .errors import AuthenticationError, ScimForbidden, ScimPipelineError
from .filters import eq_filter, literal
from .profiles import Operation
from .settings import ConnectionSettings
from .target_quirks import PatchKind, TargetQuirks

__all__ = ["CheckReport", "CheckRow", "run_check"]

_PROBE_COUNT = 2  # Delinea's own connection test reads GET /Users?startIndex=1&count=2
_REQUIRED = ("Users", "Groups")
"""Resource types the sync cannot work without: never skipped, and a failed probe fails the check."""
_WRITE_PROBE = frozenset({Operation.CREATE, Operation.PATCH, Operation.DELETE})
CONTAINER_RIGHTS = ("Owner", "Edit", "Add Secret", "View")
"""The rights the seed asks the service account to hold on the containers it manages."""
_PAM_TYPES = frozenset({"Containers", "ContainerPermissions", "PrivilegedData"})
_GRANT = (
    "grant the service account Owner, Edit, Add Secret and View on the containers it manages (a 403 means it "
    "lacks Owner-level rights; never retried)"
)


@dataclass(frozen=True)
class CheckRow:
    """One line of the report; ``informational`` rows never fail the check."""

    name: str
    ok: bool
    detail: str
    informational: bool = False


@dataclass
class CheckReport:
    """The result of :func:`run_check`."""

    base_url: str
    profile: str
    rows: list[CheckRow] = field(default_factory=list)
    capabilities: ServerCapabilities | None = None
    quirks: TargetQuirks | None = None
    """What the check learned about the target (with what it was given), to keep per target."""

    @property
    def passed(self) -> bool:
        """True when every non-informational row passed (and there was at least one)."""
        checks = [row for row in self.rows if not row.informational]
        return bool(checks) and all(row.ok for row in checks)

    def render(self) -> str:
        """A plain-text table, then what the server announces."""
        width = max([len(row.name) for row in self.rows] + [5])
        lines = [
            f"SCIM connection check — {self.base_url} (profile {self.profile})",
            "",
            f"{'check'.ljust(width)}  result  detail",
            f"{'-' * width}  ------  {'-' * 40}",
        ]
        for row in self.rows:
            result = "info" if row.informational else ("PASS" if row.ok else "FAIL")
            lines.append(f"{row.name.ljust(width)}  {result.ljust(6)}  {row.detail}")
        if self.capabilities is not None:
            lines += ["", "The server announces:"]
            lines += [f"  {name}: {value}" for name, value in self.capabilities.summary()]
            lines += [f"  note: {note}" for note in self.capabilities.notes]
        lines += ["", "PASSED" if self.passed else "FAILED"]
        return "\n".join(lines)


def _probe_filter(resource_type: str) -> str | None:
    """A filter the Delinea rules allow that matches nothing, for types that must be filtered
    (ContainerPermissions) or that are costly to list unfiltered (PrivilegedData)."""
    if resource_type in ("ContainerPermissions", "PrivilegedData"):
        return str(eq_filter("user.value", str(uuid.uuid4())))
    return None


async def run_check(
    settings: ConnectionSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resource_types: Sequence[str] | None = None,
    quirks: TargetQuirks | None = None,
    write_probes: bool = False,
    containers: Sequence[str] = (),
) -> CheckReport:
    """Prove the token is obtained and each resource type answers a request the profile allows.

    ``resource_types`` defaults to every type of the profile; under a profile that lets any
    server in (``rfc7644``), types the server's /ResourceTypes does not list are skipped — except
    Users and Groups, always probed. ``quirks`` are those kept for this target; ``write_probes``
    lets the check create, PATCH and delete probe objects to find the PATCH forms the target accepts.
    ``containers`` (names, e.g. those of the access file) are looked up and the service account's rights on each
    are verified: Owner-level rights to read their permissions, and Owner, Edit, Add Secret and View when it holds
    them as a user permission.
    """
    report = CheckReport(base_url=settings.base_url, profile=settings.profile)
    async with ScimClient(settings, transport=transport, quirks=quirks) as client:
        report.quirks = client.quirks
        if client.auth is None:
            report.rows.append(CheckRow("token", False, "no client credentials (SCIM_CLIENT_ID/SECRET)"))
            return report
        try:
            await client.auth.token()
        except AuthenticationError as error:
            report.rows.append(CheckRow("token", False, str(error)))
            return report
        report.rows.append(CheckRow("token", True, f"obtained from {settings.token_url}"))

        try:
            capabilities = await discover(client)
        except ScimPipelineError as error:
            report.rows.append(CheckRow("discovery", True, str(error), informational=True))
            capabilities = ServerCapabilities()
        report.capabilities = capabilities
        for name, served in (
            ("ServiceProviderConfig", capabilities.service_provider_config_served),
            ("ResourceTypes", capabilities.resource_types_served),
            ("Schemas", capabilities.schemas_served),
        ):
            detail = "served" if served else "not served (tolerated)"
            report.rows.append(CheckRow(f"/{name}", True, detail, informational=True))

        strict_profile = client.profile.name != "rfc7644"
        probed_ok: set[str] = set()
        for resource_type in resource_types or list(client.profile.resource_types):
            required = resource_type in _REQUIRED
            if not strict_profile and not required and capabilities.serves(resource_type) is False:
                report.rows.append(CheckRow(resource_type, True, "not served: skipped", informational=True))
                continue
            row = await _probe(client, resource_type)
            if required and capabilities.serves(resource_type) is False:
                row = CheckRow(row.name, row.ok, f"{row.detail} (not listed by /ResourceTypes)")
            if row.ok:
                probed_ok.add(resource_type)
            report.rows.append(row)
        report.rows += await _patch_form_rows(client, probed_ok, write_probes=write_probes)
        if "Containers" in client.profile.resource_types:
            report.rows += await _container_rights_rows(client, containers, settings.client_id)
    return report


async def _container_rights_rows(
    client: ScimClient, containers: Sequence[str], service_account: str | None
) -> list[CheckRow]:
    """One row per container: found by name, its permissions readable (Owner-level rights), and which of the
    seed's rights the service account is missing when it holds a user permission there."""
    rows: list[CheckRow] = []
    for name in containers:
        label = f"rights on container {name!r}"
        try:
            found = await client.find_one("Containers", "name", name)
            if found is None or not isinstance(found.get("id"), str):
                rows.append(CheckRow(label, True, "not on the target yet (a sync creates it)", informational=True))
                continue
            permissions = await client.search("ContainerPermissions", str(eq_filter("container.value", found["id"])))
        except ScimForbidden:
            rows.append(CheckRow(label, False, f"HTTP 403: {_GRANT}"))
            continue
        except ScimPipelineError as error:
            rows.append(CheckRow(label, False, str(error)))
            continue
        held = _rights_of_account(permissions, service_account)
        if held is None:
            rows.append(CheckRow(label, True, "Owner-level read: yes (rights held through a group are not shown)"))
            continue
        missing = [right for right in CONTAINER_RIGHTS if right not in held]
        detail = "holds " + ", ".join(sorted(held)) if not missing else f"missing {', '.join(missing)}: {_GRANT}"
        rows.append(CheckRow(label, not missing, detail))
    return rows


def _rights_of_account(permissions: Sequence[dict[str, object]], service_account: str | None) -> set[str] | None:
    """The rights of the user permission naming the service account (its display is its user name), if any."""
    if not service_account:
        return None
    for permission in permissions:
        user = permission.get("user")
        if isinstance(user, dict) and str(user.get("display", "")).casefold() == service_account.casefold():
            rights = permission.get("rights")
            return {str(r) for r in rights} if isinstance(rights, list) else set()
    return None


async def _patch_form_rows(client: ScimClient, probed_ok: set[str], *, write_probes: bool) -> list[CheckRow]:
    """Informational rows: which PATCH forms the target accepts (known, probed, or not probed)."""
    rows: list[CheckRow] = []
    for resource_type, kind in (("Users", PatchKind.ATTRIBUTES), ("Groups", PatchKind.MEMBER_REMOVAL)):
        if resource_type not in client.profile.resource_types:
            continue
        rules = client.profile.rules(resource_type)
        allowed = rules.operations >= _WRITE_PROBE and (
            kind is PatchKind.ATTRIBUTES or client.profile.rules("Users").operations >= _WRITE_PROBE
        )
        probe_error = None
        if (
            write_probes
            and allowed
            and resource_type in probed_ok
            and client.quirks.working_form(resource_type, kind) is None
        ):
            try:
                await _probe_patch(client, kind)
            except ScimPipelineError as error:
                probe_error = str(error)
        rows.append(
            CheckRow(
                f"PATCH {resource_type} {kind.value}",
                True,
                _forms_detail(client, resource_type, kind, probe_error, allowed, write_probes),
                informational=True,
            )
        )
    return rows


def _forms_detail(
    client: ScimClient, resource_type: str, kind: PatchKind, probe_error: str | None, allowed: bool, write_probes: bool
) -> str:
    working = client.quirks.working_form(resource_type, kind)
    refused = sorted(client.quirks.refused_forms(resource_type, kind))
    parts = []
    if working is not None:
        parts.append(f"accepts {working.value}")
    if refused:
        parts.append("refuses " + ", ".join(refused))
    if probe_error is not None:
        parts.append(f"probe failed: {probe_error}")
    if not parts:
        if not write_probes:
            return "not probed (the check writes nothing unless asked to)"
        return (
            "not probed (the profile does not allow creating and deleting probe objects)"
            if not allowed
            else "not probed"
        )
    return "; ".join(parts)


async def _probe_patch(client: ScimClient, kind: PatchKind) -> None:
    """Create probe objects, PATCH them in the form under test, delete them (whatever happens)."""
    marker = f"scim-pipeline-check-{uuid.uuid4().hex[:12]}"
    user = await client.create(
        "Users", {"schemas": [client.profile.rules("Users").schema], "userName": marker, "active": False}
    )
    group_id: str | None = None
    try:
        assert user.scim_id is not None
        if kind is PatchKind.ATTRIBUTES:
            await client.patch("Users", user.scim_id, [{"op": "replace", "path": "displayName", "value": marker}])
            return
        group = await client.create(
            "Groups",
            {
                "schemas": [client.profile.rules("Groups").schema],
                "displayName": marker,
                "members": [{"value": user.scim_id}],
            },
        )
        group_id = group.scim_id
        assert group_id is not None
        await client.patch("Groups", group_id, [{"op": "remove", "path": f"members[value eq {literal(user.scim_id)}]"}])
    finally:
        if group_id is not None:
            await client.delete("Groups", group_id)
        if user.scim_id is not None:
            await client.delete("Users", user.scim_id)


async def _probe(client: ScimClient, resource_type: str) -> CheckRow:
    probe_filter = _probe_filter(resource_type)
    shown = f"GET /{resource_type}?startIndex=1&count={_PROBE_COUNT}"
    if probe_filter is not None:
        shown += " with a filter matching nothing"
    try:
        page = await client.page(resource_type, probe_filter, count=_PROBE_COUNT)
    except ScimForbidden as error:
        fix = f"; {_GRANT}" if resource_type in _PAM_TYPES else ""
        return CheckRow(resource_type, False, f"{shown}: {error}{fix}")
    except ScimPipelineError as error:
        return CheckRow(resource_type, False, f"{shown}: {error}")
    total = page.get("totalResults")
    return CheckRow(resource_type, True, f"{shown}: answered (totalResults {total})")
