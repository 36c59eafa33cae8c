"""`scim-pipeline verify-workflows`: the workflow check of :mod:`scim_pipeline.scim.verify` against the target the
``SCIM_*`` variables configure — or, with ``SCIM_BASE_URL`` unset, against a throwaway embedded emulator, labelled as
such, so the command can be tried before a staging tenant exists (it verifies nothing about a tenant then)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from scim_pipeline.scim.settings import ClientSettings, ConnectionSettings
from scim_pipeline.scim.verify import DEFAULT_USER_DOMAIN, VerifyReport, run_verify
from scim_pipeline.settings import PipelineSettings

__all__ = ["DEMO_LABEL", "connection_settings", "verify_workflows", "verify_workflows_command"]

DEMO_LABEL = (
    "DEMO MODE — SCIM_BASE_URL is unset: a throwaway embedded Delinea emulator (in memory, discarded afterwards); "
    "this verifies nothing about your tenant"
)


def connection_settings(settings: PipelineSettings) -> ConnectionSettings:
    """The SCIM client's settings of a configured target (``SCIM_BASE_URL`` set)."""
    common: dict[str, Any] = {name: getattr(settings, name) for name in ClientSettings.model_fields}
    return ConnectionSettings(base_url=settings.base_url, client_secret=settings.client_secret, **common)


def verify_workflows(
    *,
    with_containers: bool = False,
    user_domain: str = DEFAULT_USER_DOMAIN,
    env: Mapping[str, str] | None = None,
) -> VerifyReport:
    """Run the workflow check against the configured target (or, in demo mode, a throwaway emulator)."""
    settings = PipelineSettings.from_env(env)
    if not settings.demo_mode:
        return asyncio.run(
            run_verify(connection_settings(settings), with_containers=with_containers, user_domain=user_domain)
        )
    from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer

    with EmulatorServer(EmulatorConfig()) as server:
        common: dict[str, Any] = {name: getattr(settings, name) for name in ClientSettings.model_fields}
        demo: dict[str, Any] = {
            "token_url": server.token_url,
            "client_id": DEMO_CLIENT_ID,
            "profile": "delinea",
            "token_auth": "auto",
            "ca_bundle": None,
        }
        connection = ConnectionSettings(
            base_url=server.base_url, client_secret=DEMO_CLIENT_SECRET, **{**common, **demo}
        )
        return asyncio.run(
            run_verify(connection, with_containers=with_containers, user_domain=user_domain, label=DEMO_LABEL)
        )


def verify_workflows_command(*, with_containers: bool, user_domain: str, as_json: bool) -> int:
    """Print the report (a table, or JSON); 0 when every step passed, else 1."""
    report = verify_workflows(with_containers=with_containers, user_domain=user_domain)
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
    return 0 if report.passed else 1
