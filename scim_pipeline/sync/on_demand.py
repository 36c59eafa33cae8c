"""Provision on demand: one identity and its memberships, now, through the same cycle.

``CycleOptions(only_user=NAME)`` (``scim-pipeline sync --user NAME``, the sync job's ``user`` config) runs the
cycle's phases — plan, guards, user upsert, memberships — over one roster user, under the writer lease, with every
call in the audit trail. Both sides of the plan are cut to that user: the roster (its row and its memberships) and
what we manage (its row and the memberships we added for it), so no other identity is created, changed or
deprovisioned, and no group is created or released. Groups must already be on the target; a membership of a group
that is not is shown as waiting for the next full cycle.

An identity we do not manage yet is looked up on the target by its matching attribute first (one GET): when found,
it is adopted (recorded as ours with the values read back, then only the attributes that differ are patched);
otherwise it is created. :class:`OnDemandReport` says which, with the attributes changed (old → new) and the
groups joined or left.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sync.plan.changes import user_attribute_columns
from scim_pipeline.sync.plan.payloads import resource_attrs
from scim_pipeline.sync.state import UNKNOWN_HASH, AuditRecord, ManagedSnapshot, StateBatch

if TYPE_CHECKING:
    from scim_pipeline.scim.client import ScimClient
    from scim_pipeline.sync.plan.changes import RosterFrames
    from scim_pipeline.sync.state import ProvisioningState

__all__ = ["OnDemand", "OnDemandReport", "find_roster_user"]

_SECRET_MARKERS = ("password", "secret", "token")
"""Attribute paths whose values are never shown (a mapping may provision an initial password)."""


def find_roster_user(roster: RosterFrames, name: str) -> tuple[str, str]:
    """The (key, key_norm) of the roster user ``name`` names (its matching key, case-insensitively).

    Raises ConfigurationError naming ``name`` when no accepted roster row has it: why its row was set aside, or the
    closest keys."""
    wanted = name.strip()
    users = roster.users
    keys = users["key"].astype(str)
    for mask in (keys.eq(wanted), keys.str.casefold().eq(wanted.casefold())):
        found = users[mask.to_numpy()]
        if len(found):
            return str(found["key"].iloc[0]), str(found["key_norm"].iloc[0])
    rejected = getattr(roster, "rejected", None)
    if isinstance(rejected, pd.DataFrame) and len(rejected) and "key" in rejected.columns:
        named = rejected[
            rejected["table"].eq("users") & rejected["key"].astype("string").str.casefold().eq(wanted.casefold())
        ]
        if len(named):
            first = named.iloc[0]
            where = f"row {first['row']}" if pd.notna(first.get("row")) else "its row"
            field_name = f" ({first['field']})" if pd.notna(first.get("field")) else ""
            raise ConfigurationError(
                f"user {wanted!r}: the roster's users {where} was rejected{field_name}: {first['reason']}; fix the "
                "row, then run again"
            )
    folded = {key.casefold(): key for key in keys}
    close = [folded[k] for k in difflib.get_close_matches(wanted.casefold(), list(folded), n=3, cutoff=0.6)]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ConfigurationError(f"user {wanted!r} is not in the roster ({len(users):,} users, matched on their key){hint}")


@dataclass(frozen=True)
class _OneUser:
    users: pd.DataFrame
    groups: pd.DataFrame
    memberships: pd.DataFrame
    rejected: pd.DataFrame


@dataclass
class OnDemand:
    """One on-demand identity inside a cycle: its scope, how it was matched, the adoption to record."""

    key: str
    key_norm: str
    match_attribute: str
    matched: str = "none"
    """``managed`` (we manage it), ``target`` (found on the target and adopted) or ``none`` (to be created)."""
    scim_id: str | None = None
    old_attrs: dict[str, Any] = field(default_factory=dict)
    adoption: tuple[int, dict[str, Any], list[tuple[str, str]]] | None = None
    """(shard, attrs read back, memberships found on the target) to record before any write, or None."""

    @classmethod
    def of(cls, roster: RosterFrames, name: str, match_attribute: str) -> OnDemand:
        key, key_norm = find_roster_user(roster, name)
        return cls(key=key, key_norm=key_norm, match_attribute=match_attribute)

    def roster_view(self, roster: RosterFrames) -> _OneUser:
        """The roster cut to this user and its memberships (every group kept, for names and ids)."""
        users = roster.users[roster.users["key_norm"].astype(str).eq(self.key_norm).to_numpy()]
        memberships = roster.memberships[roster.memberships["user_key_norm"].astype(str).eq(self.key_norm).to_numpy()]
        rejected = getattr(roster, "rejected", None)
        return _OneUser(
            users, roster.groups, memberships, rejected if isinstance(rejected, pd.DataFrame) else pd.DataFrame()
        )

    def scope(self, snapshot: ManagedSnapshot) -> ManagedSnapshot:
        """What we manage cut to this user and the memberships we added for it (every group kept)."""
        users = snapshot.users[snapshot.users["key_norm"].astype(str).eq(self.key_norm).to_numpy()]
        memberships = snapshot.memberships[
            snapshot.memberships["user_key_norm"].astype(str).eq(self.key_norm).to_numpy()
        ]
        return ManagedSnapshot(users, snapshot.groups, memberships, snapshot.attrs_loader)

    async def match(
        self,
        client: ScimClient,
        state: ProvisioningState,
        roster_users: pd.DataFrame,
        snapshot: ManagedSnapshot,
        users_plan: pd.DataFrame,
    ) -> ManagedSnapshot | None:
        """Find out how the identity is matched. Returns the snapshot with the identity adopted (to plan again)
        when it was found on the target, else None."""
        mine = snapshot.users[snapshot.users["scim_id"].notna().to_numpy()]
        if len(mine):
            self.matched = "managed"
            self.scim_id = str(mine["scim_id"].iloc[0])
            self.old_attrs = json.loads(snapshot.attrs_of("Users", mine)[0])
            return None
        creates = users_plan[users_plan["op"].eq("create").to_numpy()]
        if creates.empty:
            return None  # inactive and never provisioned, or held: nothing to match
        payload = json.loads(str(creates["payload"].iloc[0]))
        found = await client.find_existing("Users", payload, self.match_attribute, self.key)
        if found is None or not found.get("id"):
            return None
        self.matched = "target"
        self.scim_id = str(found["id"])
        keys_by_id = {scim_id: key_norm for key_norm, scim_id in state.user_ids().items()}
        self.old_attrs = resource_attrs(found, user_attribute_columns(roster_users), manager_key=keys_by_id.get)
        group_keys = dict(
            zip(snapshot.groups["scim_id"].astype(str), snapshot.groups["key_norm"].astype(str), strict=True)
        )
        on_target = [
            (group_keys[str(entry.get("value"))], self.key_norm)
            for entry in found.get("groups") or []
            if isinstance(entry, dict) and str(entry.get("value")) in group_keys
        ]
        shard = int(creates["shard"].iloc[0])
        self.adoption = (shard, self.old_attrs, on_target)
        row = pd.DataFrame(
            {
                "key_norm": [self.key_norm],
                "key": [self.key],
                "scim_id": [self.scim_id],
                "shard": [shard],
                "attrs_hash": [UNKNOWN_HASH],
                "active": pd.array([bool(found.get("active", True))], dtype="boolean"),
            }
        )
        users = row.astype({"key_norm": "string", "key": "string", "scim_id": "string", "shard": "int64"})
        adopted_attrs = json.dumps(self.old_attrs)
        loader = snapshot.attrs_loader

        def attrs_loader(kind: Any, key_norms: Any) -> dict[str, str]:
            found_attrs = dict(loader(kind, key_norms)) if loader is not None else {}
            if kind == "Users" and self.key_norm in key_norms:
                found_attrs[self.key_norm] = adopted_attrs
            return found_attrs

        memberships = pd.DataFrame(on_target, columns=["group_key_norm", "user_key_norm"], dtype="string")
        return ManagedSnapshot(users, snapshot.groups, memberships, attrs_loader)

    def record_adoption(self, state: ProvisioningState, *, run_id: str) -> None:
        """Record the identity found on the target as ours (after the guards, before any write)."""
        if self.adoption is None or self.scim_id is None:
            return
        shard, attrs, memberships = self.adoption
        batch = StateBatch()
        batch.upsert_user(self.key_norm, key=self.key, scim_id=self.scim_id, shard=shard, attrs=attrs, origin="adopted")
        batch.membership_adds.extend(memberships)
        batch.audit.append(
            AuditRecord(
                resource_type="Users",
                operation="adopt",
                key=self.key,
                outcome="adopted",
                scim_id=self.scim_id,
                run_id=run_id,
            )
        )
        state.apply(batch)
        self.adoption = None


@dataclass
class OnDemandReport:
    """The step-by-step account of one identity provisioned on demand (values shown, never a secret's)."""

    user: str
    dry_run: bool
    match_attribute: str
    matched: str
    action: str
    """created, adopted, updated, re-enabled, disabled, unchanged, failed or not provisioned."""
    scim_id: str | None = None
    attributes: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, old, new) of each attribute written."""
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        would = "would be " if self.dry_run else ""
        by = f"by {self.match_attribute}"
        match_line = {
            "managed": f"matched: already managed by this pipeline (SCIM id {self.scim_id}), {by}",
            "target": f"matched: found on the target {by} (SCIM id {self.scim_id}): {would}adopted, not created",
            "none": f"matched: not on the target {by}",
        }[self.matched]
        lines = [f"provision on demand: {self.user}" + (" (dry run: nothing executed)" if self.dry_run else "")]
        lines.append(f"  1. {match_line}")
        id_text = f" (SCIM id {self.scim_id})" if self.scim_id and self.action == "created" else ""
        lines.append(f"  2. user: {would if self.action not in ('unchanged', 'failed') else ''}{self.action}{id_text}")
        if self.attributes:
            verb = "set" if self.action == "created" else "changed"
            lines.append(f"  3. attributes {would}{verb} ({len(self.attributes)}):")
            lines.extend(f"       {path}: {old} → {new}" for path, old, new in self.attributes)
        else:
            lines.append("  3. attributes: none changed")
        groups = []
        if self.joined:
            groups.append(f"{would}joined {', '.join(self.joined)}")
        if self.left:
            groups.append(f"{would}left {', '.join(self.left)}")
        lines.append(f"  4. groups: {'; '.join(groups) if groups else 'no change'}")
        lines.extend(f"       waiting: {group} — {reason}" for group, reason in self.waiting)
        lines.extend(f"  failed: {failure}" for failure in self.failures)
        lines.append("  no other identity was looked at, created, changed or deprovisioned")
        return lines


def on_demand_report(
    demand: OnDemand,
    *,
    dry_run: bool,
    users_plan: pd.DataFrame,
    memberships: pd.DataFrame,
    member_outcomes: list[tuple[str, str, tuple[str, ...], str]],
    deferred: pd.DataFrame,
    failures: list[Any],
    group_names: dict[str, str],
    state: ProvisioningState,
) -> OnDemandReport:
    """The report of one on-demand identity, from its cycle's plan and execution."""
    mine = users_plan[users_plan["key_norm"].astype(str).eq(demand.key_norm).to_numpy()]
    ops = [str(op) for op in mine["op"] if op != "refresh"]
    op = ops[0] if ops else None
    # The run touched this identity and its memberships only: every failure is one of theirs.
    own_failures = [f"{f.resource_type} {f.op} {f.key}: {f.message}" for f in failures]
    action = {
        None: "unchanged",
        "create": "created",
        "update": "updated",
        "enable": "re-enabled",
        "disable": "disabled",
        "delete": "deleted",
    }.get(op, str(op))
    if op is None and demand.matched == "none":
        action = "not provisioned (inactive in the roster, or held back after repeated failures)"
    if demand.matched == "target" and op is None:
        action = "adopted, no attribute differs"
    attributes: list[tuple[str, str, str]] = []
    if op is not None and len(mine):
        new = json.loads(str(mine[mine["op"].eq(op).to_numpy()]["attrs"].iloc[0]) or "{}")
        old = {} if op == "create" else demand.old_attrs
        for path in dict.fromkeys([*old, *new]):
            before, after = old.get(path), new.get(path)
            if before != after:
                attributes.append((path, _shown(path, before), _shown(path, after)))
    scim_id = demand.scim_id
    if op == "create" and not dry_run:
        recorded = state.get_user(demand.key_norm)
        scim_id = str(recorded["scim_id"]) if recorded and recorded.get("scim_id") else None
        if any(f.resource_type == "Users" and f.key == demand.key for f in failures):
            action = "failed"
        elif scim_id is None:
            action = "not created (held back after repeated failures, or the cycle stopped first)"
    joined: list[str] = []
    left: list[str] = []
    if dry_run:
        for member_op, group_key_norm, members in memberships[["op", "group_key_norm", "member_key_norms"]].itertuples(
            index=False
        ):
            if demand.key_norm in json.loads(str(members) or "[]"):
                name = group_names.get(str(group_key_norm), str(group_key_norm))
                (joined if member_op == "add_members" else left).append(name)
    else:
        for member_op, group_key_norm, member_keys, outcome in member_outcomes:
            if demand.key_norm in member_keys and outcome != "failed":
                name = group_names.get(group_key_norm, group_key_norm)
                (joined if member_op == "add_members" else left).append(name)
    waiting = [
        (str(group), str(reason))
        for group, user, reason in deferred[["group", "user", "reason"]].itertuples(index=False)
        if str(user) == demand.key
    ]
    return OnDemandReport(
        user=demand.key,
        dry_run=dry_run,
        match_attribute=demand.match_attribute,
        matched=demand.matched,
        action=action,
        scim_id=scim_id,
        attributes=attributes,
        joined=sorted(joined),
        left=sorted(left),
        waiting=waiting,
        failures=own_failures,
    )


def _shown(path: str, value: Any) -> str:
    if value is None:
        return "(none)"
    if any(marker in path.casefold() for marker in _SECRET_MARKERS):
        return "(not shown)"
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
