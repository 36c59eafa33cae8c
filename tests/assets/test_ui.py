"""The Dagster UI as a person uses it: `dagster dev` in demo mode on loopback, driven by Debian's chromium.

The asset graph reads roster → changes → provisioning → audit; the plan and sync jobs launched from the Launchpad
without a partition (what a person does after Dagster's "this job is partitioned" question) succeed; each shard's
metadata holds that shard's own counts. Screenshots land in ``$SCIM_PIPELINE_SCREENSHOTS`` when it is set
(``docs/screenshots`` refreshes the README's images), else in the temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster._core.storage.tags import SCHEDULE_NAME_TAG, SENSOR_NAME_TAG

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# A test run must not rewrite the checkout's images; refreshing them is asked for.
SCREENSHOTS = Path(
    os.environ.get("SCIM_PIPELINE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "scim-pipeline-screenshots"
).resolve()
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
        document: dict[str, dict[str, Any]] = json.load(answer)
    return document["data"]


# A CI runner may start the suite with SIGINT ignored, and children inherit that: `dagster dev` then never stopped on
# SIGINT and each teardown waited out its 30 s. It is started through this, to stop on SIGINT as at a terminal.
_INTERRUPTIBLE = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


@contextlib.contextmanager
def running_dagster_dev(
    tmp_path: Path, *, workspace: Path | str = "workspace.yaml", env: dict[str, str] | None = None
) -> Iterator[str]:
    """`dagster dev` on a free loopback port with a fresh DAGSTER_HOME under ``tmp_path``, once its code location
    has loaded; the environment holds no SCIM_* variable but those of ``env``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    process_env = {name: value for name, value in os.environ.items() if not name.startswith("SCIM_")}
    process_env.update(env or {})
    process_env["DAGSTER_HOME"] = str(home)
    port = free_port()
    log = (tmp_path / "dagster_dev.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _INTERRUPTIBLE,
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            str(workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=process_env,
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


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[str]:
    with running_dagster_dev(tmp_path) as url:
        yield url


def runs(url: str) -> list[dict[str, Any]]:
    data = graphql(
        url, "{ runsOrError { ... on Runs { results { runId status jobName startTime endTime tags { key } } } } }"
    )
    results: list[dict[str, Any]] = data["runsOrError"]["results"]
    return results


def started_by(run: dict[str, Any], *tags: str) -> bool:
    """Whether ``run`` carries one of ``tags`` (Dagster's ``SCHEDULE_NAME_TAG``, ``SENSOR_NAME_TAG``)."""
    return any(tag["key"] in tags for tag in run["tags"])


def launched_by_hand(url: str, job: str, before: set[str]) -> list[dict[str, Any]]:
    """The runs of ``job`` that are not in ``before`` and were not started by a schedule or a sensor: the one a
    person launched. (A schedule running by default, such as the health job's, may tick while the test waits.)"""
    return [
        run
        for run in runs(url)
        if run["runId"] not in before
        and run["jobName"] == job
        and not started_by(run, SCHEDULE_NAME_TAG, SENSOR_NAME_TAG)
    ]


def materializations(url: str, asset: str, run_id: str) -> list[dict[str, str]]:
    """The metadata of each materialization of ``asset`` by run ``run_id`` (one per shard for a per-shard asset)."""
    data = graphql(
        url,
        f'{{ assetOrError(assetKey: {{path: ["{asset}"]}}) {{ ... on Asset {{ assetMaterializations(limit: 100) {{ '
        "runId partition metadataEntries { label ... on IntMetadataEntry { intValue } "
        "... on TextMetadataEntry { text } } } } } }",
    )
    return [
        {
            "partition": str(m["partition"]),
            **{e["label"]: str(e.get("intValue", e.get("text"))) for e in m["metadataEntries"]},
        }
        for m in data["assetOrError"]["assetMaterializations"]
        if m["runId"] == run_id
    ]


def dismiss_newsletter_prompt(page: Any) -> None:
    """Dagster asks a fresh instance's first visitor to join its newsletter, a moment after the page loads."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Skip").click(timeout=15_000)


def launch_from_the_launchpad(page: Any, url: str, job: str) -> dict[str, Any]:
    """Open the job's Launchpad, launch it without a partition (confirming Dagster's "this job is partitioned"
    question, as a person does) and wait for the run to end."""
    before = {run["runId"] for run in runs(url)}
    page.goto(f"{url}/locations/scim_pipeline/jobs/{job}/playground", wait_until="networkidle", timeout=120_000)
    page.get_by_role("button", name="Launch Run").click(timeout=60_000)
    page.locator("[role=dialog]").get_by_role("button", name="Confirm").click(timeout=30_000)
    deadline = time.monotonic() + 300
    while True:
        new = launched_by_hand(url, job, before)
        if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return new[0]
        assert time.monotonic() < deadline, f"{job} did not finish: {new}"
        time.sleep(2)


def test_the_launchpad_runs_plan_then_sync_and_each_shard_shows_its_own_rows(dagster_dev: str) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = dagster_dev
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/asset-groups", wait_until="networkidle", timeout=120_000)
        page.get_by_role("button", name="Materialize all (19)…").wait_for(timeout=60_000)
        dismiss_newsletter_prompt(page)
        for group in ("idp", "changes", "provisioning", "audit"):
            assert page.get_by_text(group, exact=True).count() >= 1, group
        page.screenshot(path=str(SCREENSHOTS / "asset-graph.png"))

        plan = launch_from_the_launchpad(page, url, "scim_plan")
        assert plan["status"] == "SUCCESS", plan
        sync = launch_from_the_launchpad(page, url, "scim_sync")
        assert sync["status"] == "SUCCESS", sync
        print(f"\nscim_sync from the Launchpad: {sync['endTime'] - sync['startTime']:.1f} s from start to end")

        page.goto(f"{url}/assets/user_changes", wait_until="networkidle", timeout=120_000)
        page.get_by_text("Show schema").first.wait_for(timeout=60_000)  # the change set's rows: who, what, why
        page.screenshot(path=str(SCREENSHOTS / "user-changes.png"), full_page=True)
        page.goto(f"{url}/assets/user_changes?view=partitions&partition=003", wait_until="networkidle", timeout=120_000)
        page.get_by_text("Show schema").first.wait_for(timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "shard-metadata.png"), full_page=True)
        page.set_viewport_size({"width": 2200, "height": 1100})
        for asset, shot in (("user_changes", "lineage-users.png"), ("group_provisioning", "lineage-groups.png")):
            page.goto(
                f"{url}/assets/{asset}?view=lineage&lineageScope=neighbors&lineageDepth=4",
                wait_until="networkidle",
                timeout=120_000,
            )
            page.get_by_text(asset, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / shot))
        browser.close()

    # The plan created nothing; the sync's shards each hold their own counts, and they add up to the run.
    planned = materializations(url, "user_changes", plan["runId"])
    assert sum(int(shard["creates"]) for shard in planned) == 58
    shards = materializations(url, "user_changes", sync["runId"])
    assert len(shards) == 16
    assert sum(int(shard["creates"]) for shard in shards) == 58
    assert len({shard["creates"] for shard in shards}) > 1, "every shard shows the same count: the run's total?"
    (audit,) = materializations(url, "provisioning_audit", sync["runId"])
    # 58 users, 8 groups, 8 member PATCHes; with the sample access file 4 containers and 10 permissions.
    assert int(audit["calls"]) == 88
    assert audit["failed"] == "0"
    (snapshot,) = materializations(url, "access_snapshot", sync["runId"])
    assert (snapshot["containers"], snapshot["permissions"], snapshot["drift"]) == ("4", "10", "0")
