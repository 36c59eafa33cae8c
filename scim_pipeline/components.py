"""The Dagster Components this package registers with `dg` (`dg list components`, `dg scaffold defs`).

`type: scim_pipeline.components.ScimProvisioningComponent` in a `defs.yaml` names the Component.
"""

from scim_pipeline.assets.component import ScimProvisioningComponent

__all__ = ["ScimProvisioningComponent"]
