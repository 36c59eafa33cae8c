"""Materialization metadata: row counts, numeric counters the UI plots, column schemas and short previews."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

PREVIEW_ROWS = 10


def frame_metadata(frame: pd.DataFrame, *, preview_columns: list[str] | None = None) -> dict[str, Any]:
    """`dagster/row_count`, the column schema and a short markdown preview of a frame."""
    metadata: dict[str, Any] = {
        "dagster/row_count": len(frame),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=str(name), type=str(dtype)) for name, dtype in frame.dtypes.items()]
        ),
    }
    if preview_columns is not None and len(frame):
        shown = [column for column in preview_columns if column in frame.columns]
        metadata["preview"] = MetadataValue.md(markdown_table(frame[shown].head(PREVIEW_ROWS)))
    return metadata


def counts_metadata(counts: Mapping[str, int | float]) -> dict[str, Any]:
    """Numeric metadata entries (plotted over time by the Dagster UI)."""
    return {
        name: MetadataValue.int(int(value)) if float(value).is_integer() else float(value)
        for name, value in counts.items()
    }


def markdown_table(frame: pd.DataFrame) -> str:
    """A small markdown table; cells are escaped so roster values cannot break the table."""
    if frame.empty:
        return "_(empty)_"
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return text if len(text) <= 80 else text[:77] + "..."
