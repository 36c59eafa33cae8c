"""The README's generated tables — every setting, every asset — kept equal to the code that declares them.

``python -m scim_pipeline.readme`` rewrites the blocks between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in
README.md (a test fails while they differ).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from scim_pipeline.assets.catalogue import ASSETS, CHECKS
from scim_pipeline.settings import settings_table

__all__ = ["asset_table", "blocks", "render"]


def asset_table() -> str:
    """One row per asset of a target, in the order the graph reads: stage, kind, per shard or not, what it holds."""
    lines = ["| asset | stage | kind | partitioned | what it holds | checks |", "| --- | --- | --- | --- | --- | --- |"]
    for asset in ASSETS:
        checks = ", ".join(f"`{check.name}`" for check in CHECKS if check.asset == asset.name)
        shard = "per shard" if asset.per_identity else "—"
        description = asset.description.replace("|", "\\|")
        lines.append(f"| `{asset.name}` | {asset.stage} | {asset.kind} | {shard} | {description} | {checks} |")
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    return {"settings": settings_table(), "assets": asset_table()}


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + body + "\n" + match.group(2)


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    for name, content in blocks().items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- BEGIN {name} --> … <!-- END {name} --> block")
        text = pattern.sub(_replacement(content), text)
    return text


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("README.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
