"""The connection check behind ``scim-pipeline check``: token, discovery, one harmless request per
resource type, printed as a pass/fail table. It never raises for a server-side problem: every
failure becomes a failing row with a one-line reason."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from .client import ScimClient
from .discovery import ServerCapabilities, discover
from .errors import AuthenticationError, ScimPipelineError
from .filters import eq_filter
from .settings import ConnectionSettings

__all__ = ["CheckReport", "CheckRow", "run_check"]

_PROBE_COUNT = 2  # Delinea's own connection test reads GET /Users?startIndex=1&count=2


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
) -> CheckReport:
    """Prove the token is obtained and each resource type answers a request the profile allows.

    ``resource_types`` defaults to every type of the profile; under a profile that lets any
    server in (``rfc7644``), types the server's /ResourceTypes does not list are skipped.
    """
    report = CheckReport(base_url=settings.base_url, profile=settings.profile)
    async with ScimClient(settings, transport=transport) as client:
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
        for resource_type in resource_types or list(client.profile.resource_types):
            if not strict_profile and capabilities.serves(resource_type) is False:
                report.rows.append(CheckRow(resource_type, True, "not served: skipped", informational=True))
                continue
            report.rows.append(await _probe(client, resource_type))
    return report


async def _probe(client: ScimClient, resource_type: str) -> CheckRow:
    probe_filter = _probe_filter(resource_type)
    shown = f"GET /{resource_type}?startIndex=1&count={_PROBE_COUNT}"
    if probe_filter is not None:
        shown += " with a filter matching nothing"
    try:
        page = await client.page(resource_type, probe_filter, count=_PROBE_COUNT)
    except ScimPipelineError as error:
        return CheckRow(resource_type, False, f"{shown}: {error}")
    total = page.get("totalResults")
    return CheckRow(resource_type, True, f"{shown}: answered (totalResults {total})")
