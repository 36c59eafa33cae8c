"""Identities whose roster row was rejected are held as they are, never deprovisioned.

A user whose row became invalid (a typo in `active`, a duplicated key) has not left the IdP: disabling them would
punish a data-entry error with lost access. Their change waits until the row is fixed.
"""

from __future__ import annotations

import pandas as pd

REMOVAL_OPS = frozenset({"disable", "delete", "release"})


def hold_rejected(planned: pd.DataFrame, rejected: pd.DataFrame, *, table: str) -> pd.DataFrame:
    """Drop planned removals of identities whose `table` row was rejected this cycle.

    Keys are compared casefolded on both sides: for case-sensitive externId matching this can only hold back more,
    never remove more.
    """
    if planned.empty or rejected.empty:
        return planned
    rejected_keys = rejected.loc[rejected["table"].eq(table) & rejected["key"].notna(), "key"].astype("string")
    held_keys = set(rejected_keys.str.casefold())
    if not held_keys:
        return planned
    is_removal = planned["op"].isin(REMOVAL_OPS)
    is_held = planned["key_norm"].astype("string").str.casefold().isin(held_keys).fillna(False)
    return planned[~(is_removal & is_held)].reset_index(drop=True)
