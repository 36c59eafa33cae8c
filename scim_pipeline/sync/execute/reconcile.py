"""Adoption of an existing tenant, and drift between the target and what we manage.

- :func:`adopt_existing` — the first run against a tenant that already has users and groups: target objects whose
  matching attribute equals a roster key (compared casefolded, as the roster's ``key_norm`` is) are recorded as
  managed with ``origin='adopted'`` and their *current* values, so the next plan patches only what differs.
  Objects that match nothing are left alone, and a roster key matched by several target objects is reported as
  ambiguous and not adopted.
- :func:`detect_drift` — for managed objects only: attribute values that differ between what we recorded and what
  the target holds (changes made in Delinea instead of the IdP), managed objects missing on the target, and members
  we added that are gone from their group.
- :func:`apply_drift` — record the target's values as observed, so the next plan restores the IdP's truth; a
  managed object deleted on the target is forgotten, so the next cycle re-creates it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from scim_pipeline.sync.plan.changes import RosterFrames, group_attribute_columns, user_attribute_columns
from scim_pipeline.sync.plan.payloads import is_missing, resource_attrs
from scim_pipeline.sync.state import ProvisioningState, StateBatch

if TYPE_CHECKING:
    from scim_pipeline.scim.client import ScimClient

__all__ = [
    "DRIFT_COLUMNS",
    "MISSING",
    "AdoptionReport",
    "ReadVerdict",
    "TargetRead",
    "adopt_existing",
    "apply_drift",
    "detect_drift",
    "reconcile_target",
]

DRIFT_COLUMNS = ("resource_type", "key", "key_norm", "scim_id", "attribute", "managed_value", "target_value")
MISSING = "(missing on target)"
"""The ``attribute`` of a drift row for a managed object that no longer exists on the target."""
_MEMBER = "members"


@dataclass
class AdoptionReport:
    """What :func:`adopt_existing` recorded."""

    users_adopted: int = 0
    groups_adopted: int = 0
    memberships_adopted: int = 0
    ambiguous: list[tuple[str, str]] = field(default_factory=list)
    """(resource type, roster key) matched by more than one target object: not adopted."""


def _match_value(resource: Mapping[str, Any], attribute: str) -> str | None:
    value = resource_attrs(resource, [attribute]).get(attribute)
    return value.casefold() if isinstance(value, str) and value else None


def _index_by(resources: Sequence[Mapping[str, Any]], attribute: str) -> dict[str, list[Mapping[str, Any]]]:
    index: dict[str, list[Mapping[str, Any]]] = {}
    for resource in resources:
        value = _match_value(resource, attribute)
        if value is not None:
            index.setdefault(value, []).append(resource)
    return index


def adopt_existing(
    state: ProvisioningState,
    roster: RosterFrames,
    target_users: Sequence[Mapping[str, Any]],
    target_groups: Sequence[Mapping[str, Any]],
    match_attribute: str = "userName",
    *,
    group_match_attribute: str = "displayName",
) -> AdoptionReport:
    """Record target objects matching roster keys as managed (``origin='adopted'``); leave the rest alone.

    Identities already managed are not touched. Memberships present on the target *and* in the roster, between
    adopted (or managed) users and groups, are recorded as ours too, so they are not added again.
    """
    report = AdoptionReport()
    batch = StateBatch()
    managed_users = state.managed_users()
    managed_groups = state.managed_groups()
    known_users = set(managed_users.loc[managed_users["scim_id"].notna(), "key_norm"].astype(str))
    known_groups = set(managed_groups.loc[managed_groups["scim_id"].notna(), "key_norm"].astype(str))

    user_paths = user_attribute_columns(roster.users)
    users_by_key = _index_by(target_users, match_attribute)
    key_by_user_id = {str(r["id"]): v for v, rs in users_by_key.items() for r in rs if "id" in r}
    user_ids: dict[str, str] = dict(
        zip(
            managed_users.loc[managed_users["scim_id"].notna(), "key_norm"].astype(str),
            managed_users.loc[managed_users["scim_id"].notna(), "scim_id"].astype(str),
            strict=True,
        )
    )
    roster_users = roster.users[["key_norm", "key", "shard"]].astype({"key_norm": str, "key": str})
    for key_norm, key, shard in roster_users.itertuples(index=False):
        if key_norm in known_users or key_norm not in users_by_key:
            continue
        matches = users_by_key[key_norm]
        if len(matches) > 1:
            report.ambiguous.append(("Users", key))
            continue
        resource = matches[0]
        attrs = resource_attrs(resource, user_paths, manager_key=key_by_user_id.get)
        batch.upsert_user(
            key_norm, key=key, scim_id=str(resource["id"]), shard=int(shard), attrs=attrs, origin="adopted"
        )
        user_ids[key_norm] = str(resource["id"])
        report.users_adopted += 1

    group_paths = group_attribute_columns(roster.groups)
    groups_by_key = _index_by(target_groups, group_match_attribute)
    group_members: dict[str, set[str]] = {}
    for key_norm, key in roster.groups[["key_norm", "key"]].astype(str).itertuples(index=False):
        if key_norm in known_groups or key_norm not in groups_by_key:
            continue
        matches = groups_by_key[key_norm]
        if len(matches) > 1:
            report.ambiguous.append(("Groups", key))
            continue
        resource = matches[0]
        attrs = resource_attrs(resource, group_paths)
        batch.upsert_group(key_norm, key=key, scim_id=str(resource["id"]), attrs=attrs, origin="adopted")
        members = resource.get("members")
        if isinstance(members, list):
            group_members[key_norm] = {str(m.get("value")) for m in members if isinstance(m, Mapping)}
        report.groups_adopted += 1

    if group_members:
        wanted = roster.memberships[["group_key_norm", "user_key_norm"]].astype(str)
        wanted = wanted[wanted["group_key_norm"].isin(list(group_members))]
        for group_key_norm, user_key_norm in wanted.itertuples(index=False):
            user_id = user_ids.get(user_key_norm)
            if user_id is not None and user_id in group_members[group_key_norm]:
                batch.membership_adds.append((group_key_norm, user_key_norm))
                report.memberships_adopted += 1
    state.apply(batch)
    return report


def _values_differ(managed: Any, target: Any) -> bool:
    if is_missing(managed) and is_missing(target):
        return False
    if isinstance(managed, str) and isinstance(target, str):
        return managed != target
    return bool(managed != target)


def detect_drift(
    state: ProvisioningState,
    target_users: Sequence[Mapping[str, Any]],
    target_groups: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    """Differences between what we manage and the target, one row per attribute (see ``DRIFT_COLUMNS``).

    Only managed objects are compared, only on the attributes we recorded. Values are for the drift report;
    keep them out of logs. Group members are compared when the target groups carry ``members``.
    """
    rows: list[tuple[Any, ...]] = []
    users = state.managed_users()
    users = users[users["scim_id"].notna()]
    targets = {str(r.get("id")): r for r in target_users}
    key_by_user_id = dict(zip(users["scim_id"].astype(str), users["key_norm"].astype(str), strict=True))
    for key_norm, key, scim_id, attrs_text in users[["key_norm", "key", "scim_id", "attrs"]].itertuples(index=False):
        resource = targets.get(str(scim_id))
        if resource is None:
            rows.append(("Users", key, key_norm, scim_id, MISSING, None, None))
            continue
        recorded: dict[str, Any] = json.loads(attrs_text)
        current = resource_attrs(resource, recorded, manager_key=key_by_user_id.get)
        for path, value in recorded.items():
            if _values_differ(value, current.get(path)):
                rows.append(("Users", key, key_norm, scim_id, path, value, current.get(path)))

    groups = state.managed_groups()
    groups = groups[groups["scim_id"].notna()]
    group_targets = {str(r.get("id")): r for r in target_groups}
    memberships = state.managed_memberships()
    ours_by_group: dict[str, set[str]] = {}
    for group_key_norm, user_key_norm in memberships.astype(str).itertuples(index=False):
        ours_by_group.setdefault(group_key_norm, set()).add(user_key_norm)
    user_id_by_key = {v: k for k, v in key_by_user_id.items()}
    for key_norm, key, scim_id, attrs_text in groups[["key_norm", "key", "scim_id", "attrs"]].itertuples(index=False):
        resource = group_targets.get(str(scim_id))
        if resource is None:
            rows.append(("Groups", key, key_norm, scim_id, MISSING, None, None))
            continue
        recorded = json.loads(attrs_text)
        current = resource_attrs(resource, recorded)
        for path, value in recorded.items():
            if _values_differ(value, current.get(path)):
                rows.append(("Groups", key, key_norm, scim_id, path, value, current.get(path)))
        members = resource.get("members")
        if not isinstance(members, list):
            continue
        present = {str(m.get("value")) for m in members if isinstance(m, Mapping)}
        for user_key_norm in sorted(ours_by_group.get(str(key_norm), set())):
            user_id = user_id_by_key.get(user_key_norm)
            if user_id is not None and user_id not in present:
                rows.append(("Groups", key, key_norm, scim_id, _MEMBER, user_key_norm, None))
    return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))


def apply_drift(state: ProvisioningState, drift: pd.DataFrame) -> int:
    """Record drift so the next plan repairs it; returns how many drift rows were applied.

    Drifted attributes are recorded with the target's value (the next plan patches them back to the roster's);
    a managed object missing on the target is forgotten (the next cycle re-creates it); a member we added that
    was removed on the target is forgotten as a membership (the next cycle adds it again).
    """
    if drift.empty:
        return 0
    batch = StateBatch()
    user_updates: dict[str, dict[str, Any]] = {}
    group_updates: dict[str, dict[str, Any]] = {}
    for row in drift.itertuples(index=False):
        kind, key_norm, attribute = str(row.resource_type), str(row.key_norm), str(row.attribute)
        if attribute == MISSING:
            (batch.user_deletes if kind == "Users" else batch.group_deletes).append(key_norm)
            continue
        if kind == "Groups" and attribute == _MEMBER:
            batch.membership_removes.append((key_norm, str(row.managed_value)))
            continue
        updates = user_updates if kind == "Users" else group_updates
        if key_norm not in updates:
            record = state.get_user(key_norm) if kind == "Users" else state.get_group(key_norm)
            updates[key_norm] = dict(record["attrs"]) if record else {}
        target_value = row.target_value
        if target_value is None or is_missing(target_value):
            updates[key_norm].pop(attribute, None)
        else:
            updates[key_norm][attribute] = target_value
    if user_updates:
        state.set_observed_attrs("Users", user_updates)
    if group_updates:
        state.set_observed_attrs("Groups", group_updates)
    state.apply(batch)
    return len(drift)


MAX_MISSING_CHECKS = 500
"""Managed objects missing from a full read are confirmed one by one with a GET, at most this many per cycle."""


@dataclass(frozen=True)
class ReadVerdict:
    """How far a full read of the target can be trusted."""

    users_read: int
    groups_read: int
    missing_reported: int = 0
    missing_confirmed: int = 0
    trusted: bool = True
    reason: str = ""


@dataclass
class TargetRead:
    """The result of :func:`reconcile_target`."""

    adoption: AdoptionReport
    drift: pd.DataFrame
    verdict: ReadVerdict
    notes: list[str] = field(default_factory=list)


async def reconcile_target(
    client: ScimClient,
    state: ProvisioningState,
    roster: RosterFrames,
    *,
    user_match_attribute: str = "userName",
    group_match_attribute: str = "displayName",
    detect: bool = True,
) -> TargetRead:
    """Read the whole target; adopt the unmanaged objects whose matching key is a roster identity (a first run
    against an existing tenant, and orphans of create answers that were lost); with ``detect``, report and repair
    drift of what we manage.

    One incomplete or suspicious read never makes us forget a managed object: each object missing from the listing
    is confirmed with its own GET (a 404), and when too many are missing to confirm, none is forgotten.
    """
    from scim_pipeline.scim.discovery import discover

    # The served /Schemas tell which mapped attributes the target does not store at all.
    await discover(client)
    target_users = await client.search("Users")
    target_groups = await client.search("Groups")
    adoption = adopt_existing(
        state,
        roster,
        target_users,
        target_groups,
        user_match_attribute,
        group_match_attribute=group_match_attribute,
    )
    notes: list[str] = []
    for resource_type, key in adoption.ambiguous[:20]:
        notes.append(f"{resource_type} {key!r}: several target objects match; none was adopted")
    if adoption.users_adopted or adoption.groups_adopted:
        notes.append(
            f"adopted {adoption.users_adopted} users and {adoption.groups_adopted} groups found on the target that "
            "match roster identities"
        )
    drift = pd.DataFrame(columns=list(DRIFT_COLUMNS))
    verdict = ReadVerdict(users_read=len(target_users), groups_read=len(target_groups))
    if detect:
        drift = detect_drift(state, target_users, target_groups)
        drift, dropped = _without_dropped(client, roster, drift)
        if dropped:
            notes.append(
                "the target does not store "
                + ", ".join(sorted(dropped))
                + ": left out of drift (it would be written again every cycle)"
            )
        drift, verdict = await _confirm_missing(client, drift, verdict)
        if not verdict.trusted:
            notes.append(verdict.reason)
        apply_drift(state, drift)
    return TargetRead(adoption=adoption, drift=drift, verdict=verdict, notes=notes)


def _without_dropped(client: ScimClient, roster: RosterFrames, drift: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """Drift rows of attributes the target drops (seen missing from its answers to our writes, or absent from its
    /Schemas) are not drift: restoring them would rewrite them every cycle, and the mass-update guard then blocks."""
    if drift.empty:
        return drift, set()
    dropped = {
        "Users": client.quirks.dropped_attributes("Users", among=user_attribute_columns(roster.users)),
        "Groups": client.quirks.dropped_attributes("Groups", among=group_attribute_columns(roster.groups)),
    }
    is_dropped = pd.Series(
        [
            str(a) in dropped.get(str(t), frozenset())
            for t, a in zip(drift["resource_type"], drift["attribute"], strict=True)
        ],
        index=drift.index,
        dtype=bool,
    )
    seen = {str(a) for a in drift.loc[is_dropped, "attribute"]}
    return drift[~is_dropped].reset_index(drop=True), seen


async def _confirm_missing(
    client: ScimClient, drift: pd.DataFrame, verdict: ReadVerdict
) -> tuple[pd.DataFrame, ReadVerdict]:
    """Keep only the "missing on target" rows a GET confirms (404); drop all of them when there are too many."""
    from scim_pipeline.scim.errors import ScimNotFound

    missing = drift[drift["attribute"] == MISSING]
    if missing.empty:
        return drift, verdict
    others = drift[drift["attribute"] != MISSING]
    if len(missing) > MAX_MISSING_CHECKS:
        return others, ReadVerdict(
            users_read=verdict.users_read,
            groups_read=verdict.groups_read,
            missing_reported=len(missing),
            trusted=False,
            reason=f"{len(missing)} managed objects are missing from the target's listing — more than the "
            f"{MAX_MISSING_CHECKS} this cycle confirms one by one: the read looks incomplete, so none was forgotten",
        )

    async def gone(resource_type: str, scim_id: str) -> bool:
        try:
            await client.get(resource_type, scim_id, attributes=["id"])
        except ScimNotFound:
            return True
        except Exception:  # a failing check proves nothing: keep the object
            return False
        return False

    confirmations = await asyncio.gather(
        *(gone(str(row.resource_type), str(row.scim_id)) for row in missing.itertuples(index=False))
    )
    confirmed = missing[list(confirmations)]
    kept = pd.concat([others, confirmed], ignore_index=True) if not confirmed.empty else others
    unconfirmed = len(missing) - len(confirmed)
    return kept.reset_index(drop=True), ReadVerdict(
        users_read=verdict.users_read,
        groups_read=verdict.groups_read,
        missing_reported=len(missing),
        missing_confirmed=len(confirmed),
        trusted=unconfirmed == 0,
        reason=(
            ""
            if unconfirmed == 0
            else f"{unconfirmed} managed objects were missing from the target's listing but still answer a GET: the "
            "listing is incomplete, so they were kept"
        ),
    )
