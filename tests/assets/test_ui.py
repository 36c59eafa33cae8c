"""The Dagster UI as a person uses it: `dagster dev` in demo mode on loopback, driven by Debian's chromium.

The asset graph reads roster → target → changes → provisioning → audit; "Materialize all" over all shards is one
run that succeeds; the counts show in the assets' metadata. Screenshots land in docs/ (the README shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
# As the machine's notes say: without these, chromium's background connections are refused on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def graphql(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - an http URL on loopback
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - an http URL on loopback
        document: dict[str, Any] = json.load(answer)
    return document["data"]


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCIM_")}
    env["DAGSTER_HOME"] = str(home)
    port = free_port()
    log = (tmp_path / "dagster_dev.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                locations = graphql(
                    url,
                    "{ workspaceOrError { ... on Workspace { locationEntries { name "
                    "locationOrLoadError { __typename } } } } }",
                )
                entries = locations["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / "dagster_dev.log").read_text()
            assert time.monotonic() < deadline, "dagster dev did not load the code location in time"
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def runs(url: str) -> list[dict[str, Any]]:
    data = graphql(url, "{ runsOrError { ... on Runs { results { runId status jobName startTime endTime } } } }")
    results: list[dict[str, Any]] = data["runsOrError"]["results"]
    return results


def latest_metadata(url: str, asset: str) -> dict[str, str]:
    data = graphql(
        url,
        f'{{ assetOrError(assetKey: {{path: ["{asset}"]}}) {{ ... on Asset {{ assetMaterializations(limit: 1) {{ '
        "metadataEntries { label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }",
    )
    (materialization,) = data["assetOrError"]["assetMaterializations"]
    return {
        entry["label"]: str(entry.get("intValue", entry.get("text"))) for entry in materialization["metadataEntries"]
    }


def dismiss_newsletter_prompt(page: Any) -> None:
    """Dagster asks a fresh instance's first visitor to join its newsletter, a moment after the page loads."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Skip").click(timeout=15_000)


def test_materialize_all_in_the_ui_runs_the_whole_cycle_in_one_run(dagster_dev: str) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = dagster_dev
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/asset-groups", wait_until="networkidle", timeout=120_000)
        materialize_all = page.get_by_role("button", name="Materialize all (19)…")
        materialize_all.wait_for(timeout=60_000)
        dismiss_newsletter_prompt(page)
        for group in ("idp", "target", "changes", "provisioning", "audit"):
            assert page.get_by_text(group, exact=True).count() >= 1
        page.screenshot(path=str(SCREENSHOTS / "asset-graph.png"))

        materialize_all.click()
        dialog = page.locator("[role=dialog]")
        dialog.get_by_role("button", name="All", exact=True).click()
        dialog.get_by_text("16 partitions", exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(SCREENSHOTS / "materialize-all.png"))
        dialog.get_by_role("button", name="Launch backfill").click()

        deadline = time.monotonic() + 300
        while True:
            launched = runs(url)
            if launched and all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in launched):
                break
            assert time.monotonic() < deadline, f"the backfill did not finish: {launched}"
            time.sleep(2)
        assert len(launched) == 1, launched
        assert launched[0]["status"] == "SUCCESS", launched
        print(f"\nMaterialize all: 1 run, {launched[0]['endTime'] - launched[0]['startTime']:.1f} s from start to end")

        page.goto(f"{url}/assets/user_changes", wait_until="networkidle", timeout=120_000)
        page.get_by_text("creates").first.wait_for(timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "user-changes.png"), full_page=True)
        browser.close()

    user_changes = latest_metadata(url, "user_changes")
    assert user_changes["creates"] == "58"
    audit = latest_metadata(url, "provisioning_audit")
    # 58 users, 8 groups, 8 member PATCHes; with the sample access file 4 containers and 10 permissions.
    assert int(audit["calls"]) == 88
    assert audit["failures"] == "0"
    snapshot = latest_metadata(url, "access_snapshot")
    assert (snapshot["containers"], snapshot["permissions"], snapshot["drift"]) == ("4", "10", "0")
