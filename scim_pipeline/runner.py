"""Run the code location's jobs in-process from the command line, against the instance in $DAGSTER_HOME.

The CLI runs exactly the assets the UI runs, so a sync started from a terminal shows in `dagster dev` with its
lineage, checks and audit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scim_pipeline.scim import ConfigurationError
from scim_pipeline.settings import PipelineSettings, default_dagster_home

if TYPE_CHECKING:
    from scim_pipeline.sync.outcome import CycleOutcome


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or the per-user default when it is unset (so a fresh machine needs no setup, and a sync
    started from another folder finds the same state and run history)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(default_dagster_home())
        os.environ["DAGSTER_HOME"] = home
        print(
            f"DAGSTER_HOME is not set: using {home} (export DAGSTER_HOME={home} before `dagster dev` to see these "
            "runs in the UI)",
            file=sys.stderr,
        )
    from scim_pipeline.resources.home import prepare_dagster_home

    # Safe when several CLI processes (a schedule wrapper, a person at a terminal) first use a home at once.
    return prepare_dagster_home(home)


_PID_TAG = "scim_pipeline/pid"
_HOST_TAG = "scim_pipeline/host"


def _process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run, so a later process can tell when it died mid-run."""
    return {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname()}


def release_abandoned_runs(instance: Any) -> list[str]:
    """Fail the runs a `scim-pipeline` process on this host left unfinished when it died (SIGKILL, OOM, power),
    and free the concurrency slots they held.

    A run killed mid-step stays "started" for ever when no Dagster daemon watches it, and holds its place in the
    target's pool for the runs the daemon queues. Returns the released run ids.
    """
    from dagster import DagsterRunStatus, RunsFilter

    from scim_pipeline.sync.state.lease import process_is_running

    unfinished = instance.get_runs(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
            tags={_HOST_TAG: socket.gethostname()},
        )
    )
    released: list[str] = []
    for run in unfinished:
        pid = run.tags.get(_PID_TAG, "")
        if not pid.isdigit() or process_is_running(int(pid)):
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
    show_all: bool = False,
    as_json: bool = False,
    verbose: bool = False,
    user: str | None = None,
) -> int:
    """Run one cycle (or a plan) through the code location's own job — without a partition (every shard), or over
    the given shards, or for one ``user`` (provision on demand) — print what it did (or would do) to whom, and
    return the process exit code.

    The runs execute in this process, so their typed reports are read from them directly (never from a file), and
    they are Dagster runs of the same job the UI shows."""
    from dagster import DagsterInstance

    from scim_pipeline.assets.component import DEMO_BANNER, ScimProvisioningComponent
    from scim_pipeline.assets.jobs import JobNames, cycle_run_config
    from scim_pipeline.assets.partitions import contiguous_ranges, range_tags
    from scim_pipeline.sync.engine import collected_reports
    from scim_pipeline.sync.outcome import CycleOutcome

    env = dict(os.environ)
    if demo:
        for name in ("SCIM_BASE_URL", "SCIM_ROSTER", "SCIM_MAPPING"):
            env.pop(name, None)
    settings = PipelineSettings.from_env(env)
    wanted = sorted(set(shards)) if shards else None
    for shard in wanted or ():
        if not 0 <= shard < settings.shards:
            raise ConfigurationError(
                f"--shard {shard} is out of range: SCIM_SHARDS={settings.shards} (0 to {settings.shards - 1})"
            )
    ensure_dagster_home()
    component = ScimProvisioningComponent.from_settings(settings)
    defs = component.definitions()
    if settings.demo_mode:
        print(DEMO_BANNER, file=sys.stderr)
    job = defs.resolve_job_def(JobNames().sync)
    # Dagster's console logger would print whole tracebacks; the summary below names each failure in one line.
    run_config: dict[str, Any] = {
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        **cycle_run_config(
            "scim_cycle",
            dry_run=dry_run,
            reconcile=reconcile,
            allow_mass_changes=allow_mass_changes,
            **({"user": user} if user else {}),
        ),
    }
    instance = DagsterInstance.get()
    release_abandoned_runs(instance)
    runs: list[dict[str, str]] = (
        [{}] if wanted is None else [range_tags(first, last) for first, last in contiguous_ranges(wanted)]
    )
    outcomes: list[CycleOutcome] = []
    errors: list[str] = []
    with _progress_to_stderr(), _retry_chatter(verbose=verbose), collected_reports() as reports:
        for partition_tags in runs:
            result = job.execute_in_process(
                instance=instance,
                tags={**partition_tags, **_process_tags()},
                run_config=run_config,
                raise_on_error=False,
            )
            report = reports.get(result.run_id)
            if report is not None:
                outcomes.append(CycleOutcome.from_report(report))
                continue
            # The cycle stopped before it had a report (a setting, the roster, the token, another writer).
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data is not None:
                    errors.append(_root_cause(event.step_failure_data.error))
    outcome = CycleOutcome.merged(outcomes) if outcomes else CycleOutcome(dry_run=dry_run)
    if as_json:
        document = outcome.model_dump(mode="json")
        document["errors"] = errors
        document["result"] = _result_word(outcome, errors)
        print(json.dumps(document, indent=2))
    else:
        print(render_outcome(outcome, errors=errors, show_all=show_all))
    return 0 if not (errors or outcome.failed) else 1


def _result_word(outcome: CycleOutcome, errors: list[str]) -> str:
    if errors:
        return "error"
    if outcome.stopped_by_guard:
        return "stopped_by_guard"
    if outcome.failed:
        return "failed"
    return "ok"


def _root_cause(error: Any) -> str:
    """The first line of the innermost error, without module path or class name: what went wrong and how to fix it
    (our messages say both), not where."""
    if error is None:
        return "step failed"
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = str(error.message or "").strip().splitlines()
    first = lines[0] if lines else "failed"
    return _CLASS_PREFIX.sub("", first).strip() or first


_CLASS_PREFIX = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Failure|Refused|Lost|Held|Violation|Large|Redirected)\s*:\s*)+"
)


_WHO = (
    ("user", "create", "users created"),
    ("user", "update", "users updated"),
    ("user", "enable", "users re-enabled"),
    ("user", "disable", "users disabled"),
    ("user", "delete", "users deleted"),
    ("user", "resolve", "earlier creates looked up"),
    ("group", "create", "groups created"),
    ("group", "rename", "groups renamed"),
    ("group", "update", "groups updated"),
    ("group", "release", "groups released (our members removed)"),
    ("group", "delete", "groups deleted"),
    ("group", "resolve", "earlier group creates looked up"),
    ("membership", "add", "members added"),
    ("membership", "remove", "members removed"),
    ("container", "create", "containers created"),
    ("container", "adopt", "containers adopted"),
    ("permission", "delete", "container permissions deleted"),
    ("permission", "add", "container permissions added"),
    ("permission", "adopt", "container permissions adopted"),
    ("privileged_data", "attach", "privileged data attached"),
    ("privileged_data", "detach", "privileged data detached"),
)
SHOWN = 10


def render_outcome(outcome: CycleOutcome, *, errors: list[str] | None = None, show_all: bool = False) -> str:
    """What `plan`, `sync` and `demo` print: the counts, then who — first the changes, then what was set aside."""
    from scim_pipeline.sync.outcome import PAM_COUNTS, PLAN_COUNTS

    errors = errors or []
    limit = None if show_all else SHOWN
    lines = ["", "plan (nothing executed)" if outcome.dry_run else "sync summary"]
    if outcome.target:
        lines.append(f"target: {outcome.target}")
    lines.append("")
    if outcome.on_demand:
        lines.extend(outcome.on_demand)
        lines.append("")
    with_pam = "permission_adds" in outcome.counts  # an access file was given: Delinea's containers too
    width = max(len(label) for _, label in (*PLAN_COUNTS, *(PAM_COUNTS if with_pam else ()))) + 4
    for name, label in PLAN_COUNTS:
        lines.append(f"  {label:<{width}}{outcome.counts.get(name, 0):>10,}")
    lines.append(f"  {'memberships deferred':<{width}}{outcome.counts.get('deferred', 0):>10,}")
    if "deferred_by_budget" in outcome.counts:
        lines.append(f"  {'deferred by the operation budget':<{width}}{outcome.counts['deferred_by_budget']:>10,}")
    lines.append(f"  {'rejected roster rows':<{width}}{outcome.counts.get('rejected_rows', 0):>10,}")
    if with_pam:
        for name, label in PAM_COUNTS:
            lines.append(f"  {label:<{width}}{outcome.counts.get(name, 0):>10,}")
    if not outcome.dry_run:
        lines.append(f"  {'SCIM calls':<{width}}{outcome.calls:>10,}")
        lines.append(f"  {'failed changes':<{width}}{len(outcome.failures):>10,}")
        if outcome.retries:
            lines.append(f"  {'retries':<{width}}{outcome.retries:>10,}")
        if outcome.adopted_users or outcome.adopted_groups:
            lines.append(f"  {'adopted from the target':<{width}}{outcome.adopted_users + outcome.adopted_groups:>10,}")

    for kind, op, label in _WHO:
        rows = [row for row in outcome.changes if row.kind == kind and row.op == op]
        if not rows:
            continue
        lines.append("")
        lines.append(f"{label} ({len(rows):,}):")
        for row in rows[:limit]:
            lines.append(f"  {row.key}" + (f" — {row.detail}" if row.detail else ""))
        lines.extend(_more(len(rows), limit))
    sections: list[tuple[str, list[str]] | tuple[str, list[str], int]] = [
        (
            "deferred by the operation budget ({n}) — the next cycle continues:",
            [f"{row.kind} {row.op} {row.key}" for row in outcome.budget_deferred],
        ),
        (
            "rejected roster rows ({n}) — set aside, the rest proceeds:",
            [_rejected_line(rejected) for rejected in outcome.rejected],
        ),
        (
            "memberships deferred ({n}) — not written in this cycle:",
            _deferred_lines(outcome),
            len(outcome.deferred),
        ),
        (
            "drift on the target ({n}) — restored to the roster's values next cycle:",
            [f"{d.resource_type} {d.key}: {d.attribute}" for d in outcome.drift],
        ),
        (
            "containers to fix by hand ({n}) — never attempted:",
            [f"{d.resource_type} {d.key}: {d.attribute}" for d in outcome.access_drift],
        ),
        (
            "failed changes ({n}):",
            [
                f"{f.resource_type} {f.op} {f.key}: {f.message}{f' (HTTP {f.status})' if f.status else ''}"
                for f in outcome.failures
            ],
        ),
    ]
    for title, entries, *total in sections:
        if entries:
            lines.append("")
            lines.append(title.format(n=f"{total[0] if total else len(entries):,}"))
            lines.extend(f"  {entry}" for entry in entries[:limit])
            lines.extend(_more(len(entries), limit))
    if outcome.held:
        lines.append("")
        lines.append(f"held back after repeated failures ({len(outcome.held):,}):")
        lines.extend(f"  {text}" for text in outcome.held[:limit])
    failed_guards = [guard for guard in outcome.guards if not guard.passed]
    if failed_guards:
        lines.append("")
        lines.append("stopped by a guard — nothing was sent and nothing was recorded:")
        lines.extend(f"  {guard.name}: {guard.message}" for guard in failed_guards)
    if outcome.notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in outcome.notes)
    if errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(f"  {text}" for text in errors)
    if outcome.run_ids:
        lines.append("")
        lines.append(f"runs: {', '.join(outcome.run_ids)}")
    lines.append("")
    lines.append("result: " + _result_line(outcome, errors))
    return "\n".join(lines)


NEVER_PROVISIONED = "the user is inactive in the roster and was never provisioned"


def _deferred_lines(outcome: CycleOutcome) -> list[str]:
    """One line per deferred membership, except those of users disabled before their first sync: they are never
    created (docs/sources.md), so their memberships wait for ever and are summed up in one line."""
    lines = [f"{d.user} in {d.group}: {d.reason}" for d in outcome.deferred if d.reason != NEVER_PROVISIONED]
    dormant = [d for d in outcome.deferred if d.reason == NEVER_PROVISIONED]
    if dormant:
        users = len({d.user for d in dormant})
        lines.append(
            f"{len(dormant):,} membership(s) of {users:,} user(s) inactive in the roster and never provisioned "
            "(accounts disabled before their first sync are not created; they are synced once active)"
        )
    return lines


def _rejected_line(rejected: Any) -> str:
    row_number = f" row {rejected.row}" if rejected.row is not None else ""
    field = f", {rejected.field}" if rejected.field else ""
    return f"{rejected.file or rejected.table}{row_number}{field}: {rejected.reason}"


def _more(total: int, limit: int | None) -> list[str]:
    if limit is None or total <= limit:
        return []
    return [f"  … and {total - limit:,} more (--all shows everyone)"]


def _result_line(outcome: CycleOutcome, errors: list[str]) -> str:
    if errors:
        return "FAILED — fix the error above and run again"
    if outcome.stopped_by_guard:
        return "STOPPED by a guard (the target and the state store are unchanged)"
    if outcome.stopped:
        return f"FAILED — {outcome.stopped}"
    if outcome.circuit_message:
        return f"FAILED — {outcome.circuit_message}"
    if outcome.failures:
        return f"FAILED — {len(outcome.failures)} change(s) failed; the next cycle retries them"
    return "OK (dry run: nothing was executed)" if outcome.dry_run else "OK"


class _progress_to_stderr:
    """Show the engine's progress lines (done, rate, ETA) on stderr while a CLI run is going."""

    def __enter__(self) -> None:
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("  … %(message)s"))
        logger = logging.getLogger("scim_pipeline.progress")
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("scim_pipeline.progress").removeHandler(self._handler)


@contextmanager
def _retry_chatter(*, verbose: bool) -> Iterator[None]:
    """Retry and pacing lines only with --verbose: the summary counts the retries."""
    loggers = [logging.getLogger(name) for name in ("scim_pipeline.scim.retries", "scim_pipeline.scim", "httpx")]
    before = [logger.level for logger in loggers]
    handler = logging.StreamHandler(sys.stderr)
    for logger in loggers:
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        if verbose:
            logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)
            if verbose:
                logger.removeHandler(handler)
