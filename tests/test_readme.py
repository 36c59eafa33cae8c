"""The README's settings and asset tables are generated from the code that declares them and stay equal to it."""

from __future__ import annotations

from pathlib import Path

from scim_pipeline.readme import render
from scim_pipeline.settings import PipelineSettings, variable_of

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_tables_are_those_the_code_declares() -> None:
    text = README.read_text(encoding="utf-8")

    assert render(text) == text, "README tables are stale: run `python -m scim_pipeline.readme`"


def test_every_setting_has_its_variable_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")

    missing = [variable_of(name) for name in PipelineSettings.model_fields if f"`{variable_of(name)}`" not in text]
    assert missing == []


def test_the_settings_model_and_the_component_take_exactly_the_declared_groups() -> None:
    """SETTING_GROUPS is written out again as the bases of PipelineSettings and of the Component (a class statement
    needs them literally); a group added to one and not the others would silently lose its settings there."""
    from scim_pipeline.assets.component import ScimProvisioningComponent
    from scim_pipeline.settings import SETTING_GROUPS

    assert [base for base in PipelineSettings.__bases__ if base in SETTING_GROUPS] == list(SETTING_GROUPS)
    assert [base for base in ScimProvisioningComponent.__bases__ if base in SETTING_GROUPS] == list(SETTING_GROUPS)
    assert len([b for b in PipelineSettings.__bases__ if issubclass(b, tuple(SETTING_GROUPS))]) == len(SETTING_GROUPS)
