"""Mapping and scoping: from a roster source's raw tables to the normalized `Roster`.

- `load_mapping(path)` reads a mapping file (YAML, docs/mapping.md); `Mapping()` is the default mapping.
- `build_roster(raw, mapping, shards=…)` applies it: columns onto SCIM attributes, validation, scoping, managers and
  memberships resolved, bad rows set aside with a reason (`scim_pipeline.sync.plan.roster` has the rules).
"""

from scim_pipeline.sync.plan._mapping_model import (
    DEFAULT_GROUP_RULES,
    DEFAULT_USER_RULES,
    ENTERPRISE_USER,
    WORK_EMAIL,
    AttributeRule,
    GroupMapping,
    Mapping,
    MappingError,
    MembershipMapping,
    ScopeClause,
    UserMapping,
    load_mapping,
    template_fields,
)
from scim_pipeline.sync.plan.roster import REJECTED_COLUMNS, Roster, build_roster
from scim_pipeline.sync.plan.sharding import stable_shard

__all__ = [
    "DEFAULT_GROUP_RULES",
    "DEFAULT_USER_RULES",
    "ENTERPRISE_USER",
    "REJECTED_COLUMNS",
    "WORK_EMAIL",
    "AttributeRule",
    "GroupMapping",
    "Mapping",
    "MappingError",
    "MembershipMapping",
    "Roster",
    "ScopeClause",
    "UserMapping",
    "build_roster",
    "load_mapping",
    "stable_shard",
    "template_fields",
]
