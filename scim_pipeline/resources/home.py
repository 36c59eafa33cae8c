"""Where the pipeline keeps its own files (state store, demo target, change sets) inside a Dagster home."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pipeline_home(instance: Any | None = None) -> Path:
    """The folder for scim-pipeline's files: `<DAGSTER_HOME>/scim_pipeline`.

    The instance's own root wins, so tests on an ephemeral instance never touch a real Dagster home.
    """
    root: str | None = getattr(instance, "root_directory", None) if instance is not None else None
    if not root:
        root = os.environ.get("DAGSTER_HOME") or str(Path.home() / ".dagster")
    home = Path(root) / "scim_pipeline"
    home.mkdir(parents=True, exist_ok=True)
    return home
