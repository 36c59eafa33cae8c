import pandas as pd

from scim_pipeline.assets.metadata import counts_metadata, frame_metadata, markdown_table


def test_row_count_and_schema_are_reported() -> None:
    frame = pd.DataFrame({"key": ["a", "b"], "active": [True, False]})
    metadata = frame_metadata(frame, preview_columns=["key"])
    assert metadata["dagster/row_count"] == 2
    assert [column.name for column in metadata["dagster/column_schema"].columns] == [
        "key",
        "active",
    ]
    assert "| key |" in metadata["preview"].value


def test_roster_values_cannot_break_the_preview_table() -> None:
    table = markdown_table(pd.DataFrame({"key": ["evil | value\nnext", None]}))
    lines = table.splitlines()
    assert len(lines) == 4
    assert "evil \\| value next" in lines[2]


def test_counts_are_numeric_for_the_ui_plots() -> None:
    metadata = counts_metadata({"creates": 3, "ratio": 0.5})
    assert metadata["creates"].value == 3
    assert metadata["ratio"] == 0.5
