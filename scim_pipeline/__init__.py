"""scim-pipeline: provision an IdP roster into the Delinea Platform or any RFC 7644 SCIM service provider.

The names users import are here: ``from scim_pipeline import ScimProvisioningComponent``. They are loaded on first
use, so importing a layer below (``scim_pipeline.scim``, the SCIM client, knows nothing of Dagster) does not import
Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scim_pipeline.assets.component import ScimProvisioningComponent
    from scim_pipeline.assets.location import build_definitions
    from scim_pipeline.assets.translator import ScimAssetProps, ScimTranslator
    from scim_pipeline.resources.pipeline import ProvisioningStateResource, RosterSourceResource, SyncPolicyResource
    from scim_pipeline.resources.target import ScimTargetResource
    from scim_pipeline.scim.client import ScimClient
    from scim_pipeline.scim.settings import ClientSettings, ConnectionSettings
    from scim_pipeline.settings import PipelineSettings
    from scim_pipeline.sync.cycle import CycleOptions, CycleReport
    from scim_pipeline.sync.engine import SyncEngine

__all__ = [
    "ClientSettings",
    "ConnectionSettings",
    "CycleOptions",
    "CycleReport",
    "PipelineSettings",
    "ProvisioningStateResource",
    "RosterSourceResource",
    "ScimAssetProps",
    "ScimClient",
    "ScimProvisioningComponent",
    "ScimTargetResource",
    "ScimTranslator",
    "SyncEngine",
    "SyncPolicyResource",
    "build_definitions",
]

_HOMES = {
    "ScimProvisioningComponent": "scim_pipeline.assets.component",
    "build_definitions": "scim_pipeline.assets.location",
    "ScimAssetProps": "scim_pipeline.assets.translator",
    "ScimTranslator": "scim_pipeline.assets.translator",
    "ProvisioningStateResource": "scim_pipeline.resources.pipeline",
    "RosterSourceResource": "scim_pipeline.resources.pipeline",
    "SyncPolicyResource": "scim_pipeline.resources.pipeline",
    "ScimTargetResource": "scim_pipeline.resources.target",
    "ScimClient": "scim_pipeline.scim.client",
    "ClientSettings": "scim_pipeline.scim.settings",
    "ConnectionSettings": "scim_pipeline.scim.settings",
    "PipelineSettings": "scim_pipeline.settings",
    "CycleOptions": "scim_pipeline.sync.cycle",
    "CycleReport": "scim_pipeline.sync.cycle",
    "SyncEngine": "scim_pipeline.sync.engine",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'scim_pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
