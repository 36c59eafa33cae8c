"""Guards stop an accidental cycle before any call, and say how to allow it."""

from __future__ import annotations

import json

from scim_pipeline.sync.plan.changes import ChangeSet, plan_changes
from scim_pipeline.sync.plan.guards import GuardResult, GuardSettings, evaluate_guards, guards_passed
from scim_pipeline.sync.state import ProvisioningState, StateBatch
from tests.sync.conftest import HandRoster, make_roster, user

PEOPLE = [user(f"user{i:03d}", title="Engineer") for i in range(100)]


def _manage(state: ProvisioningState, roster: HandRoster) -> None:
    plan = plan_changes(roster, state.snapshot())
    batch = StateBatch()
    for row in plan.users.itertuples(index=False):
        batch.upsert_user(
            row.key_norm,
            key=row.key,
            scim_id=f"id-{row.key_norm}",
            shard=row.shard,
            attrs=json.loads(row.attrs),
            attrs_hash=row.attrs_hash,
        )
    state.apply(batch)


def _failed(results: list[GuardResult]) -> dict[str, str]:
    return {r.name: r.message for r in results if not r.passed}


def _evaluate(state: ProvisioningState, roster: HandRoster, **settings: object) -> list[GuardResult]:
    plan: ChangeSet = plan_changes(roster, state.snapshot())
    return evaluate_guards(plan, roster, state.counts(), settings=GuardSettings(**settings))  # type: ignore[arg-type]


def test_ordinary_cycle_passes_every_guard(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE))
    results = _evaluate(state, make_roster([*PEOPLE[:95], user("newcomer")]))
    assert guards_passed(results), _failed(results)


def test_empty_roster_is_stopped(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE))
    failed = _failed(_evaluate(state, make_roster([])))
    assert "empty_roster" in failed
    assert "SCIM_ALLOW_MASS_CHANGES=1" in failed["empty_roster"]


def test_roster_that_lost_half_its_users_is_stopped(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE))
    failed = _failed(_evaluate(state, make_roster(PEOPLE[:50])))
    assert set(failed) == {"shrunken_roster", "deletion_threshold"}
    assert "50 of the 100 active users" in failed["shrunken_roster"]


def test_deletion_threshold_follows_share_or_explicit_limit(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE))
    roster = make_roster(PEOPLE[:75])  # 25 would be disabled: over the default 20 %
    failed = _failed(_evaluate(state, roster))
    assert set(failed) == {"deletion_threshold"}
    assert "SCIM_MAX_DELETES=25" in failed["deletion_threshold"]
    assert guards_passed(_evaluate(state, roster, max_deletes=30))
    assert "deletion_threshold" in _failed(_evaluate(state, roster, max_deletes=5))


def test_small_tenant_may_lose_a_few_users(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE[:20]))
    assert guards_passed(_evaluate(state, make_roster(PEOPLE[:15])))


def test_mapping_change_that_updates_everyone_is_stopped(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE))
    rewritten = make_roster([user(f"user{i:03d}", title="ENGINEER") for i in range(100)])
    failed = _failed(_evaluate(state, rewritten))
    assert set(failed) == {"mass_update"}
    assert "100 of the 100 users" in failed["mass_update"]


def test_allow_mass_changes_lets_one_run_through(state: ProvisioningState) -> None:
    _manage(state, make_roster(PEOPLE))
    assert guards_passed(_evaluate(state, make_roster([]), allow_mass_changes=True))


def test_first_onboarding_is_never_stopped(state: ProvisioningState) -> None:
    assert guards_passed(_evaluate(state, make_roster(PEOPLE)))
