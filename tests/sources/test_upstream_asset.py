"""The upstream-asset example: materializing the HR asset and the roster read from it works end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from dagster import DagsterInstance, materialize

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "upstream_asset" / "definitions.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("upstream_asset_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hr_asset_feeds_a_valid_roster(tmp_path: Path) -> None:
    example = load_example()

    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        result = materialize([example.hr_people, example.idp_roster], instance=instance)

    assert result.success
    metadata = result.asset_materializations_for_node("idp_roster")[0].metadata
    assert metadata["users_accepted"].value == 30
    assert metadata["rows_rejected"].value == 0
    assert metadata["memberships"].value == 30
    assert metadata["source"].value == "dataframe"
