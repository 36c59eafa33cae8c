"""The code location: `scim_pipeline.definitions:defs`, loaded by workspace.yaml.

Settings come from the SCIM_* environment variables (see the README). With SCIM_BASE_URL unset the location runs in
demo mode: the embedded Delinea emulator stands in for the target and the bundled sample roster for the IdP.
"""

from __future__ import annotations

from scim_pipeline.assets.location import DEMO_BANNER, build_definitions

__all__ = ["DEMO_BANNER", "build_definitions", "defs"]

defs = build_definitions()
