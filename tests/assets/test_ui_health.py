"""The health checks as a person sees them in the Dagster UI: `dagster dev` on loopback, driven by Debian's chromium.

The code location provisions a roster into the emulator over loopback, whose every user create fails, with a sync
schedule ticking every minute (tests/assets/minutely_location.py). One sync from the Launchpad leaves the users'
creates in escrow; the health job launched from the Launchpad a moment later fails ``escrow_age`` (limit: about one
second), and once a period of the schedule has passed (SCIM_OVERDUE_PERIODS=1), the provisioning assets'
``freshness_check``. Screenshots land where tests/assets/test_ui.py's do (the README's "Health and alerts" shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster._core.storage.tags import SCHEDULE_NAME_TAG

from scim_pipeline.assets.health import HEALTH_JOB
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, Roster
from tests.assets.test_ui import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    SCREENSHOTS,
    dismiss_newsletter_prompt,
    graphql,
    launch_from_the_launchpad,
    launched_by_hand,
    running_dagster_dev,
    runs,
    started_by,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]

OVERDUE_AFTER_S = 60  # one period (SCIM_OVERDUE_PERIODS=1) of a schedule ticking every minute
FRESHNESS_ASSETS = ("user_provisioning", "group_provisioning", "membership_provisioning", "provisioning_audit")


@pytest.fixture
def failing_user_creates() -> Iterator[EmulatorServer]:
    """A target that answers 500 to every user create (groups and memberships go through)."""
    config = EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}, fault_rate=1.0, fault_scope=("POST Users",))
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def dagster_dev_minutely(tmp_path: Path, roster: Roster, failing_user_creates: EmulatorServer) -> Iterator[str]:
    """`dagster dev` serving the every-minute location against the failing target."""
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: tests.assets.minutely_location\n"
        "      location_name: scim_pipeline\n"
        f"      working_directory: {ROOT}\n"
    )
    env = {
        "SCIM_BASE_URL": failing_user_creates.base_url,
        "SCIM_TOKEN_URL": failing_user_creates.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_ROSTER": str(roster.folder),
        "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
        "SCIM_SHARDS": "4",
        "SCIM_MAX_ATTEMPTS": "1",
        "SCIM_ESCROW_MAX_AGE": "0.0003",  # about one second
        "SCIM_OVERDUE_PERIODS": "1",  # one missed minute is overdue: the test waits one period, not two
        # The health schedule (running by default with a target) ticks during the test: its runs are not the ones
        # the test launches from the Launchpad, which it must tell apart (a tick every 15 minutes once failed CI).
        "SCIM_HEALTH_SCHEDULE": "* * * * *",
    }
    with running_dagster_dev(tmp_path, workspace=workspace, env=env) as url:
        yield url


def check_evaluations(url: str, run_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The run's check evaluations by (asset, check name), as the UI's GraphQL API reports them."""
    data = graphql(
        url,
        f'{{ logsForRun(runId: "{run_id}", limit: 1000) {{ ... on EventConnection {{ events {{ __typename '
        "... on AssetCheckEvaluationEvent { evaluation { assetKey { path } checkName success description } } } } } }",
    )
    return {
        ("/".join(event["evaluation"]["assetKey"]["path"]), event["evaluation"]["checkName"]): event["evaluation"]
        for event in data["logsForRun"]["events"]
        if event["__typename"] == "AssetCheckEvaluationEvent"
    }


def launch_health_job(page: Any, url: str) -> dict[str, Any]:
    """The health job from its Launchpad (not partitioned: no question to confirm), waited for until it ends."""
    before = {run["runId"] for run in runs(url)}
    page.goto(f"{url}/locations/scim_pipeline/jobs/{HEALTH_JOB}/playground", wait_until="networkidle", timeout=120_000)
    page.get_by_role("button", name="Launch Run").click(timeout=60_000)
    deadline = time.monotonic() + 180
    while True:
        new = launched_by_hand(url, HEALTH_JOB, before)
        if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return new[0]
        assert time.monotonic() < deadline, f"{HEALTH_JOB} did not finish: {new}"
        time.sleep(1)


def show_check(page: Any, url: str, asset: str, check: str, shot: str) -> None:
    page.goto(f"{url}/assets/{asset}?view=checks&checkDetail={check}", wait_until="networkidle", timeout=120_000)
    page.get_by_text(check, exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("Failed", exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)


def test_the_ui_shows_old_escrow_then_an_overdue_sync_failing_their_checks(dagster_dev_minutely: str) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = dagster_dev_minutely
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/asset-groups", wait_until="networkidle", timeout=120_000)
        dismiss_newsletter_prompt(page)

        sync = launch_from_the_launchpad(page, url, "scim_sync")
        assert sync["status"] == "FAILURE", sync  # every user create failed; the run says so
        synced_at = sync["endTime"]

        time.sleep(max(0.0, sync["endTime"] + 2 - time.time()))  # the escrow's limit is about one second
        soon = launch_health_job(page, url)
        early = check_evaluations(url, soon["runId"])
        escrow = early[("provisioning_audit", "escrow_age")]
        assert not escrow["success"], escrow
        assert escrow["description"].startswith("12 change(s) have kept failing for longer than 0.0003 h"), escrow
        for asset in FRESHNESS_ASSETS:  # the sync is recent: on time
            assert early[(asset, "freshness_check")]["success"], early[(asset, "freshness_check")]
        show_check(page, url, "provisioning_audit", "escrow_age", "health-escrow.png")

        time.sleep(max(0.0, synced_at + OVERDUE_AFTER_S + 5 - time.time()))
        late = check_evaluations(url, launch_health_job(page, url)["runId"])
        for asset in FRESHNESS_ASSETS:
            freshness = late[(asset, "freshness_check")]
            assert not freshness["success"], freshness
            assert "overdue" in freshness["description"].lower(), freshness
        show_check(page, url, "user_provisioning", "freshness_check", "health-overdue.png")
        browser.close()

    scheduled = [run for run in runs(url) if run["jobName"] == HEALTH_JOB and started_by(run, SCHEDULE_NAME_TAG)]
    assert scheduled, "the health schedule, running by default with a target, never ticked"
