"""The assets of one SCIM target, declared once: what each holds, its stage and resource kind, whether it is per
identity (partitioned by shard), what it is computed from, and the guards checked on it.

    roster_files ─► idp_users[shard] · idp_groups · idp_memberships[shard] · roster_rejections
    access_file  ─► desired_access
                     ▼  (one step: plan + guards + execute, one engine cycle)
    user_changes[shard] · group_changes · membership_changes[shard]          ← the guards, as blocking checks
    container_changes · permission_changes · privileged_data_changes
                     ▼
    user_provisioning[shard] · group_provisioning · membership_provisioning[shard]
    container_provisioning · permission_provisioning · privileged_data_provisioning
                     ▼
    provisioning_audit · access_snapshot

Keys, groups, kinds, descriptions, owners and tags are decided from these entries by the
:class:`~scim_pipeline.assets.translator.ScimTranslator`.

The per-identity assets and the others are linked only through the roster: no edge crosses between them.
Dagster cannot run an unpartitioned asset of a partitioned step without a partition when one of its inputs is
partitioned (it asks the run for a partition range it does not have), so the Launchpad, `dagster job execute` and
"Materialize" on such an asset would fail; and an asset backfill launches a shard's assets in one run only when none
of them waits for an unpartitioned parent (otherwise it splits a change set from its provisioning). A shard's
membership sync therefore creates the groups its members need itself, and the audit holds every call all the same.
Nor does a membership asset depend on a user asset: the group sync selects memberships without users, and a
partitioned input outside a run's selection again asks a run without a partition for its partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ASSETS", "CHECKS", "EXTERNAL", "AssetEntry", "CheckEntry", "entry"]

Stage = Literal["idp", "changes", "provisioning", "audit"]
Kind = Literal["users", "groups", "memberships", "containers", "permissions", "privileged_data", "roster", "access"]


@dataclass(frozen=True)
class AssetEntry:
    """One asset of a target. ``kind`` is the resource kind it serves (a user sync selects the ``users`` ones);
    ``per_identity`` assets are partitioned by shard and each partition holds that shard's own rows."""

    name: str
    stage: Stage
    kind: Kind
    description: str
    deps: tuple[str, ...] = ()
    per_identity: bool = False


@dataclass(frozen=True)
class CheckEntry:
    """An asset check: a guard (blocking: a failed guard stops the cycle before any call) or a health check."""

    name: str
    asset: str
    description: str
    blocking: bool = True


EXTERNAL: dict[str, str] = {
    "roster_files": "The IdP roster (SCIM_ROSTER folder, or the configured source). Not materialized here: the IdP, or "
    "its export job, owns it; each cycle records how it read it (an observation: mode, pages, watermark, time).",
    "access_file": "The access file (SCIM_ACCESS, docs/access.md): Delinea containers, the rights of roster groups "
    "and users on each, and which existing privileged data belongs where. Not materialized here: the identity team "
    "owns it (in git or a spreadsheet export).",
}

_ROSTER = ("roster_files",)

ASSETS: tuple[AssetEntry, ...] = (
    AssetEntry(
        "idp_users",
        "idp",
        "users",
        "Per shard: the users in scope, validated and mapped to SCIM attributes (key, display name, active, "
        "manager), as this cycle read them.",
        _ROSTER,
        per_identity=True,
    ),
    AssetEntry(
        "idp_groups", "idp", "groups", "The groups in scope, validated and mapped, with their member counts.", _ROSTER
    ),
    AssetEntry(
        "idp_memberships",
        "idp",
        "memberships",
        "Per shard: the group memberships of the shard's users (user, group).",
        _ROSTER,
        per_identity=True,
    ),
    AssetEntry(
        "roster_rejections",
        "idp",
        "roster",
        "Roster rows set aside, with the file, row number, field and reason of each; the rest of the roster proceeds, "
        "and an identity whose row was rejected is held as it is.",
        _ROSTER,
    ),
    AssetEntry(
        "desired_access",
        "idp",
        "access",
        "The access file as validated: containers, the rights of each principal on them, privileged-data placement, "
        "and its rejected rows.",
        ("access_file", "idp_groups"),
    ),
    AssetEntry(
        "user_changes",
        "changes",
        "users",
        "Per shard: who is created, updated (which attributes), re-enabled, disabled or deleted, and why — planned in "
        "this run against what we manage, and executed by this same run. Guarded.",
        ("idp_users",),
        per_identity=True,
    ),
    AssetEntry(
        "group_changes",
        "changes",
        "groups",
        "Group creates, renames, updates and removals (release: we remove the members we added; delete only where "
        "the profile allows it), and why. Guarded.",
        ("idp_groups", "roster_rejections"),
    ),
    AssetEntry(
        "membership_changes",
        "changes",
        "memberships",
        "Per shard: members added to and removed from groups, and memberships deferred with why — planned again "
        "once the users and groups created in this run have ids. Guarded.",
        ("idp_memberships",),
        per_identity=True,
    ),
    AssetEntry(
        "container_changes",
        "changes",
        "containers",
        "Containers (Secret Server folders) to create by name or adopt; renames and deletions are listed as drift to "
        "fix by hand (Delinea's SCIM API offers neither).",
        ("desired_access",),
    ),
    AssetEntry(
        "permission_changes",
        "changes",
        "permissions",
        "Container permissions to add and delete (never edited in place: other rights are a delete and an add), "
        "planned from one filtered read per container. Guarded.",
        ("desired_access", "container_changes", "group_changes"),
    ),
    AssetEntry(
        "privileged_data_changes",
        "changes",
        "privileged_data",
        "Existing privileged data to attach to or detach from containers (never created).",
        ("desired_access", "container_changes"),
    ),
    AssetEntry(
        "group_provisioning",
        "provisioning",
        "groups",
        "The group changes as the individual SCIM calls made and their outcomes.",
        ("group_changes",),
    ),
    AssetEntry(
        "user_provisioning",
        "provisioning",
        "users",
        "Per shard: the user changes as the individual SCIM calls made (managers first) and their outcomes.",
        ("user_changes",),
        per_identity=True,
    ),
    AssetEntry(
        "membership_provisioning",
        "provisioning",
        "memberships",
        "Per shard: each member change of the shard's users and its outcome (group PATCH calls, chunked).",
        ("membership_changes",),
        per_identity=True,
    ),
    AssetEntry(
        "container_provisioning",
        "provisioning",
        "containers",
        "The container creates as SCIM calls and their outcomes.",
        ("container_changes",),
    ),
    AssetEntry(
        "permission_provisioning",
        "provisioning",
        "permissions",
        "The permission deletes and adds as SCIM calls and their outcomes.",
        ("permission_changes", "container_provisioning", "group_provisioning"),
    ),
    AssetEntry(
        "privileged_data_provisioning",
        "provisioning",
        "privileged_data",
        "The privileged-data attaches and detaches as PATCH calls and their outcomes.",
        ("privileged_data_changes", "container_provisioning"),
    ),
    AssetEntry(
        "provisioning_audit",
        "audit",
        "roster",
        "Every SCIM call of this run — users', groups', memberships' and the PAM kinds' — when, what, on which "
        "key, the outcome, HTTP status, scimType, latency, attempts; adoptions and drift. Never a secret, never an "
        "attribute value beyond the matching key.",
        (
            "group_provisioning",
            "container_provisioning",
            "permission_provisioning",
            "privileged_data_provisioning",
        ),
    ),
    AssetEntry(
        "access_snapshot",
        "audit",
        "access",
        "Who holds which right on which managed container now — container, principal (user or group), right, "
        "managed by us or not — for access reviews, with drift against the access file.",
        ("permission_provisioning", "privileged_data_provisioning"),
    ),
)

CHECKS: tuple[CheckEntry, ...] = (
    CheckEntry(
        "deletion_threshold",
        "user_changes",
        "Disables + deletes in this cycle stay under SCIM_MAX_DELETES (default 20 % of the active users we manage, "
        "never less than 10).",
    ),
    CheckEntry("empty_roster", "user_changes", "The roster has users in scope whenever we manage some."),
    CheckEntry(
        "shrunken_roster", "user_changes", "The roster did not lose half of the active users we manage in one cycle."
    ),
    CheckEntry("mass_update", "user_changes", "A mapping change does not rewrite nearly every managed user at once."),
    CheckEntry(
        "group_removals",
        "group_changes",
        "Groups released or deleted in one cycle stay under 20 % of the groups we manage (at least 5), and an empty "
        "groups file never releases them all.",
    ),
    CheckEntry(
        "membership_removals",
        "membership_changes",
        "Members removed in one cycle stay under 20 % of the memberships we added (at least 100).",
    ),
    CheckEntry(
        "permission_removals",
        "permission_changes",
        "Container permissions removed in one cycle stay under SCIM_MAX_DELETES (default 20 % of the permissions we "
        "manage, at least 10).",
    ),
    CheckEntry(
        "target_matches_managed_state",
        "provisioning_audit",
        "Reconciliation: the target holds what we manage, as we last wrote it (drift made in the target instead of "
        "the IdP is listed here and repaired by the next cycle).",
        blocking=False,
    ),
    CheckEntry(
        "token_obtained",
        "provisioning_audit",
        "Health: the cycle obtained its OAuth token first, as every cycle does (fails when the token endpoint refused "
        "the credentials or could not be reached).",
        blocking=False,
    ),
    CheckEntry(
        "failure_share",
        "provisioning_audit",
        "Health: the share of this cycle's SCIM calls that failed stays under SCIM_MAX_FAILURE_SHARE; lists whose "
        "changes failed.",
        blocking=False,
    ),
    CheckEntry(
        "access_matches_file",
        "access_snapshot",
        "The rights held on the managed containers are those of the access file (rights missing, different or "
        "granted outside it are listed).",
        blocking=False,
    ),
)

_BY_NAME = {asset.name: asset for asset in ASSETS}


def entry(name: str) -> AssetEntry:
    """The entry of asset ``name``."""
    return _BY_NAME[name]
