import pandas as pd

from scim_pipeline.sync.plan.holds import hold_rejected


def planned(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"op": [op for op, _ in rows], "key_norm": [key for _, key in rows]})


def rejected(*keys: str, table: str = "users") -> pd.DataFrame:
    return pd.DataFrame({"table": [table] * len(keys), "row": range(1, len(keys) + 1), "key": list(keys)})


def test_a_user_whose_row_was_rejected_is_not_disabled() -> None:
    result = hold_rejected(planned(("disable", "ann"), ("disable", "bob")), rejected("ANN"), table="users")
    assert result["key_norm"].tolist() == ["bob"]


def test_creates_and_updates_are_not_held() -> None:
    result = hold_rejected(planned(("update", "ann"), ("create", "cy")), rejected("ann", "cy"), table="users")
    assert result["op"].tolist() == ["update", "create"]


def test_rejections_of_another_table_do_not_hold_users() -> None:
    result = hold_rejected(planned(("disable", "ops")), rejected("ops", table="groups"), table="users")
    assert len(result) == 1
