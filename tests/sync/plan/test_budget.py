"""The operation budget's split: stable order, free rows always kept, units kept or deferred together."""

from __future__ import annotations

import pandas as pd
import pytest

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sync.on_demand import find_roster_user
from scim_pipeline.sync.plan.budget import OperationBudget, PlanSplit
from tests.sync.conftest import make_roster, user


def frame(*ops: str) -> pd.DataFrame:
    return pd.DataFrame({"op": list(ops), "key": [f"k{i}" for i in range(len(ops))]})


def test_take_keeps_rows_in_order_until_the_budget_is_spent_and_free_rows_always() -> None:
    budget = OperationBudget(3)
    rows = frame("create", "refresh", "create", "create", "create", "refresh")
    costly = [op != "refresh" for op in rows["op"]]

    kept, deferred = budget.take(rows, costly=costly)

    assert list(kept["key"]) == ["k0", "k1", "k2", "k3", "k5"]
    assert list(deferred["key"]) == ["k4"]
    assert budget.used == 3
    assert budget.remaining == 0
    nothing_left, everything = budget.take(frame("create"))
    assert nothing_left.empty
    assert len(everything) == 1


def test_a_unit_that_does_not_fit_defers_every_later_unit() -> None:
    budget = OperationBudget(2)
    # A permission's delete and re-add (one slot) cost 2 and go together; after it, a single add would fit.
    rows = frame("add", "delete", "add", "add")
    kept, deferred = budget.take(rows, units=["a", "b", "b", "c"])

    assert list(kept["key"]) == ["k0"]
    assert list(deferred["key"]) == ["k1", "k2", "k3"], "stable: nothing jumps the queue"


def test_no_limit_keeps_everything() -> None:
    budget = OperationBudget(None)
    kept, deferred = budget.take(frame("create", "create"))
    assert len(kept) == 2
    assert deferred.empty


def test_plan_split_serves_creates_then_updates_then_deprovisions_and_holds_releases() -> None:
    users = pd.DataFrame({"op": ["disable", "update", "create", "refresh"], "key": ["d", "u", "c", "r"]})
    groups = pd.DataFrame(
        {
            "op": ["release", "create", "update"],
            "key": ["G-old", "G-new", "G-up"],
            "key_norm": ["g-old", "g-new", "g-up"],
        }
    )
    budget = OperationBudget(3)
    split = PlanSplit(users, groups)

    split.take_upserts(budget)
    split.take_deprovisions(budget, blocked_releases={"g-old"})
    kept_users, kept_groups, deferred_users, deferred_groups = split.result()

    assert set(kept_groups["key"]) == {"G-new", "G-up"}
    assert set(kept_users["key"]) == {"c", "r"}, "group create, user create, group update; refresh is free"
    assert set(deferred_users["key"]) == {"u", "d"}
    assert list(deferred_groups["key"]) == ["G-old"], "its member removals wait, so its release does"
    assert split.waiting_creates() == {"users": set(), "groups": set()}


def test_a_budget_below_one_is_refused() -> None:
    from scim_pipeline.sync.cycle import CycleOptions

    with pytest.raises(ValueError, match="SCIM_MAX_OPERATIONS_PER_CYCLE"):
        CycleOptions(run_id="r", max_operations=0)


def test_an_unknown_on_demand_user_is_named_with_close_matches_and_a_rejected_one_with_its_reason() -> None:
    roster = make_roster([user("alice@example.com"), user("alan@example.com")])
    assert find_roster_user(roster, "ALICE@example.com") == ("alice@example.com", "alice@example.com")
    with pytest.raises(ConfigurationError, match=r"'alce@example.com' is not in the roster .*alice@example.com"):
        find_roster_user(roster, "alce@example.com")
    roster.rejected = pd.DataFrame(
        [{"table": "users", "row": 7, "key": "bob@example.com", "field": "active", "reason": "not a boolean"}]
    )
    with pytest.raises(ConfigurationError, match=r"'bob@example.com'.*row 7 was rejected \(active\): not a boolean"):
        find_roster_user(roster, "bob@example.com")
