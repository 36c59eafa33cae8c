"""One rule for turning typed values (a database row, a DataFrame cell) into roster text."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pandas as pd

__all__ = ["as_text"]


def as_text(value: Any) -> str | None:
    """`None`, `NaN` and `NaT` are no value; booleans are `true` / `false`; dates ISO 8601; numbers as written
    (a float holding an integer keeps its `.0`: cast the column first for another form)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return as_text(value.item())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
