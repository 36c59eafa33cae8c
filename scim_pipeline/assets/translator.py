"""`ScimTranslator`: keys, groups, kinds, descriptions, owners and tags of a target's assets, decided in one place.

Subclass it (or give the Component a `translation:` block, as with dagster-sling and dagster-dbt) to change them:

```yaml
attributes:
  name: production
  translation:
    group_name: "identity_{{ props.stage }}"
    owners: ["team:identity"]
    tags: {domain: iam}
```

Template variables: ``props`` (:class:`ScimAssetProps`: ``name``, ``stage``, ``kind``, ``per_identity``, ``target``)
and ``spec`` (the default spec).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, AssetSpec

from scim_pipeline.assets.catalogue import EXTERNAL, AssetEntry

__all__ = ["ScimAssetProps", "ScimTranslator"]

_STORAGE_KIND = {"idp": "pandas", "changes": "pandas", "provisioning": "scim", "audit": "sql"}


@dataclass(frozen=True)
class ScimAssetProps:
    """What the translator knows of one asset."""

    name: str
    """The asset's name in the catalogue (``user_changes``, ``roster_files``, …)."""
    stage: str
    """``idp``, ``changes``, ``provisioning``, ``audit``, or ``source`` for the roster and access files."""
    kind: str
    """The resource kind it serves: users, groups, memberships, containers, permissions, privileged_data, …"""
    per_identity: bool = False
    """Partitioned by shard (each partition holds that shard's own rows)."""
    target: str = ""
    """The Component instance's name ("" for a single target)."""
    description: str = ""


@dataclass
class ScimTranslator:
    """The default spec of each asset: key ``[<target>, name]``, group ``<target>_<stage>`` (``stage`` alone for a
    single target), kinds ``scim`` plus the storage, the catalogue's description (prefixed by ``label``)."""

    prefix: Sequence[str] = ()
    label: str = ""
    owners: Sequence[str] = field(default_factory=tuple)

    def get_asset_key(self, props: ScimAssetProps) -> AssetKey:
        return AssetKey([*self.prefix, props.name])

    def get_group_name(self, props: ScimAssetProps) -> str:
        return "_".join([*self.prefix, props.stage])

    def get_kinds(self, props: ScimAssetProps) -> set[str]:
        if props.stage == "source":
            return {"csv"} if props.name == "roster_files" else {"yaml"}
        return {"scim", _STORAGE_KIND[props.stage]}

    def get_description(self, props: ScimAssetProps) -> str:
        return self.label + props.description

    def get_tags(self, props: ScimAssetProps) -> dict[str, str]:
        tags = {"scim_pipeline/stage": props.stage, "scim_pipeline/kind": props.kind}
        if props.target:
            tags["scim_pipeline/target"] = props.target
        return tags

    def get_asset_spec(self, props: ScimAssetProps) -> AssetSpec:
        return AssetSpec(
            self.get_asset_key(props),
            description=self.get_description(props),
            group_name=self.get_group_name(props),
            kinds=self.get_kinds(props),
            owners=list(self.owners),
            tags=self.get_tags(props),
        )


def props_of(asset: AssetEntry, target: str) -> ScimAssetProps:
    return ScimAssetProps(asset.name, asset.stage, asset.kind, asset.per_identity, target, asset.description)


def external_props(name: str, target: str) -> ScimAssetProps:
    return ScimAssetProps(
        name, "source", "roster" if name == "roster_files" else "access", False, target, EXTERNAL[name]
    )
