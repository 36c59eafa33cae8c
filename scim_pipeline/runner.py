"""Run the code location's jobs in-process from the command line, against the instance in $DAGSTER_HOME.

The CLI runs exactly the assets the UI runs, so a sync started from a terminal shows in `dagster dev` with its
lineage, checks and audit.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scim_pipeline.scim import ConfigurationError

SUMMARY_COUNTS = (
    ("user_changes", "creates"),
    ("user_changes", "updates"),
    ("user_changes", "disables"),
    ("user_changes", "deletes"),
    ("group_changes", "creates"),
    ("group_changes", "renames"),
    ("membership_changes", "member_adds"),
    ("membership_changes", "member_removes"),
    ("membership_changes", "deferred"),
)


@dataclass
class CycleSummary:
    """What one CLI cycle did, gathered from the runs' materializations and checks."""

    runs: list[str] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    calls: int = 0
    failures: int = 0
    rejected_rows: int = 0
    failed_checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    success: bool = True

    def add_count(self, asset: str, name: str, value: int) -> None:
        self.counts[(asset, name)] = self.counts.get((asset, name), 0) + value


INSTANCE_YAML = """\
# Written by scim-pipeline for a Dagster home it created.
telemetry:
  enabled: false
concurrency:
  pools:
    # Provisioning steps share the pool `scim_target`: one at a time, so parallel runs (a backfill over many
    # shards, a schedule tick during a backfill) cannot add up to more than the target's rate.
    default_limit: 1
"""


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or `./.dagster_home` when it is unset (so a fresh machine needs no setup)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
        print(
            f"DAGSTER_HOME is not set: using {home} (export DAGSTER_HOME={home} before `dagster dev` to see these "
            "runs in the UI)",
            file=sys.stderr,
        )
    Path(home).mkdir(parents=True, exist_ok=True)
    instance_yaml = Path(home) / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(INSTANCE_YAML, encoding="utf-8")
    return Path(home)


_PID_TAG = "scim_pipeline/pid"
_HOST_TAG = "scim_pipeline/host"


def _process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run, so a later process can tell when it died mid-run."""
    return {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname()}


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def release_abandoned_runs(instance: Any) -> list[str]:
    """Fail the runs a `scim-pipeline` process on this host left unfinished when it died (SIGKILL, OOM, power),
    and free the concurrency slots they held.

    The provisioning steps share the pool `scim_target` (limit 1); a run killed mid-step never gives its slot back,
    and with no Dagster daemon to notice, every later run would wait for it forever. Returns the released run ids.
    """
    from dagster import DagsterRunStatus, RunsFilter

    unfinished = instance.get_runs(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
            tags={_HOST_TAG: socket.gethostname()},
        )
    )
    released: list[str] = []
    for run in unfinished:
        pid = run.tags.get(_PID_TAG, "")
        if not pid.isdigit() or _process_exists(int(pid)):
            continue
        instance.report_run_failed(
            run, f"the scim-pipeline process {pid} ended without finishing this run (killed?); slots released"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
        print(
            f"run {run.run_id} was left unfinished by a scim-pipeline process that no longer exists (pid {pid}): "
            "marked failed and its pool slot released; this cycle resumes its work",
            file=sys.stderr,
        )
    return released


def run_sync_cycle(
    *,
    shards: list[int] | None,
    dry_run: bool,
    reconcile: bool,
    allow_mass_changes: bool,
    demo: bool,
) -> int:
    """Run one cycle (or a plan) over the given shards; print a summary; return the process exit code."""
    from dagster import DagsterInstance

    from scim_pipeline.assets.jobs import PLAN_JOB, RECONCILE_RUN_CONFIG, SYNC_JOB
    from scim_pipeline.assets.location import DEMO_BANNER, build_definitions
    from scim_pipeline.assets.partitions import contiguous_ranges, range_tags
    from scim_pipeline.resources.pipeline import shards_from_env

    ensure_dagster_home()
    env = dict(os.environ)
    if allow_mass_changes:
        env["SCIM_ALLOW_MASS_CHANGES"] = "1"
    if demo:
        env.pop("SCIM_BASE_URL", None)
        env.pop("SCIM_ROSTER", None)
        env.pop("SCIM_MAPPING", None)
    shard_count = shards_from_env(env)
    wanted = sorted(set(shards)) if shards else list(range(shard_count))
    for shard in wanted:
        if not 0 <= shard < shard_count:
            raise ConfigurationError(
                f"--shard {shard} is out of range: SCIM_SHARDS={shard_count} (0 to {shard_count - 1})"
            )

    defs = build_definitions(env)
    if not env.get("SCIM_BASE_URL"):
        print(DEMO_BANNER, file=sys.stderr)
    job = defs.resolve_job_def(PLAN_JOB if dry_run else SYNC_JOB)
    # Dagster's console logger would print whole tracebacks; the summary below names each failure in one line.
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    if reconcile:
        run_config.update(RECONCILE_RUN_CONFIG)

    summary = CycleSummary()
    instance = DagsterInstance.get()
    release_abandoned_runs(instance)
    with _progress_to_stderr():
        for first, last in contiguous_ranges(wanted):
            result = job.execute_in_process(
                instance=instance,
                tags={**range_tags(first, last), **_process_tags()},
                run_config=run_config,
                raise_on_error=False,
            )
            _collect(result, summary)

    print(render_summary(summary, dry_run=dry_run))
    return 0 if summary.success else 1


def _collect(result: Any, summary: CycleSummary) -> None:
    summary.runs.append(result.run_id)
    summary.success = summary.success and result.success
    seen: set[str] = set()
    for event in result.get_asset_materialization_events():
        asset = event.asset_key.to_user_string()
        # A run over a range of shards records one materialization per shard, each carrying the whole step's
        # counts: read each asset's figures once.
        if asset in seen:
            continue
        seen.add(asset)
        metadata = event.materialization.metadata
        for wanted_asset, name in SUMMARY_COUNTS:
            if asset == wanted_asset and name in metadata:
                summary.add_count(asset, name, int(metadata[name].value))
        if asset in ("user_provisioning", "group_provisioning", "membership_provisioning"):
            summary.calls += int(metadata["calls"].value) if "calls" in metadata else 0
            summary.failures += int(metadata["failed"].value) if "failed" in metadata else 0
            if "circuit_breaker" in metadata:
                summary.errors.append(f"{asset}: {metadata['circuit_breaker'].value}")
            if "failure_examples" in metadata:
                summary.errors.extend(
                    f"{asset}: {line}" for line in str(metadata["failure_examples"].value).splitlines() if line
                )
        if asset == "roster_rejections" and "dagster/row_count" in metadata:
            summary.rejected_rows = int(metadata["dagster/row_count"].value)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            summary.failed_checks.append(f"{evaluation.check_name}: {evaluation.description or 'failed'}")
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            summary.errors.append(f"{event.step_key}: {_root_cause(event.step_failure_data.error)}")


def _root_cause(error: Any) -> str:
    """The first line of the innermost error, without its module path: what went wrong, not where."""
    if error is None:
        return "step failed"
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = str(error.message or "").strip().splitlines()
    first = lines[0] if lines else "failed"
    return re.sub(r"^[\w.]+\.(\w+(Error|Exception|Failure)):", r"\1:", first)


def render_summary(summary: CycleSummary, *, dry_run: bool) -> str:
    """The table printed at the end of `sync`, `plan` and `demo`."""
    lines = ["", "plan (nothing executed)" if dry_run else "sync summary", ""]
    width = max(len(f"{asset}.{name}") for asset, name in SUMMARY_COUNTS) + 2
    for asset, name in SUMMARY_COUNTS:
        lines.append(f"  {f'{asset}.{name}':<{width}}{summary.counts.get((asset, name), 0):>10,}")
    if not dry_run:
        lines.append(f"  {'SCIM calls':<{width}}{summary.calls:>10,}")
        lines.append(f"  {'failed calls':<{width}}{summary.failures:>10,}")
    lines.append(f"  {'rejected roster rows':<{width}}{summary.rejected_rows:>10,}")
    lines.append(f"  {'runs':<{width}}{', '.join(summary.runs)}")
    if summary.failed_checks:
        lines.append("")
        lines.append("stopped by a guard or check:")
        lines.extend(f"  - {text}" for text in summary.failed_checks)
    if summary.errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(f"  - {text}" for text in summary.errors)
    lines.append("")
    lines.append("result: " + ("OK" if summary.success else "FAILED (see above; the next cycle retries)"))
    return "\n".join(lines)


class _progress_to_stderr:
    """Show the executor's progress lines on stderr while a CLI run is going."""

    def __enter__(self) -> None:
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("  … %(message)s"))
        logger = logging.getLogger("scim_pipeline.progress")
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("scim_pipeline.progress").removeHandler(self._handler)
