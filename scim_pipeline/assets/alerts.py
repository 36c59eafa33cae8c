"""Alerts on a failed run, a failed check or an overdue sync of one target, configured in the Component.

- **Generic webhook** (``alert_webhook_url``): one JSON POST per failed run (a run-failure sensor) and per failed
  check (a sensor over the event log's check evaluations — an overdue sync is a failed ``freshness_check``). The
  secret it expects, if any, comes from the environment variable ``alert_webhook_secret_env`` names, sent in
  ``alert_webhook_header`` at send time; it is never part of a definition, a log line or a message.
- **Slack** (``alert_slack_channel``, the ``[slack]`` extra): dagster-slack's ``make_slack_on_run_failure_sensor``
  for failed runs; failed checks through the same Slack client.
- **Microsoft Teams** (``alert_teams_webhook_env``, the ``[msteams]`` extra): dagster-msteams'
  ``make_teams_on_run_failure_sensor`` and its ``TeamsClient`` likewise.

Every message names the target (its URL without any credential), the cycle (run id, job, partition), what failed
and for whom (the identities whose changes failed, from the run's audit rows or the check's ``for_whom``), and
passes through :func:`~scim_pipeline.scim.redaction.scrub`: no secret, no token.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    DagsterInstance,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from scim_pipeline.assets.health import metadata_for_whom
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.redaction import register_secret, scrub

if TYPE_CHECKING:
    from scim_pipeline.resources.pipeline import ProvisioningStateResource
    from scim_pipeline.settings import AlertSettings

__all__ = [
    "Alert",
    "AlertDeliveryError",
    "Notifier",
    "WebhookNotifier",
    "build_alert_sensors",
    "check_failure_alerts",
    "run_failure_alert",
]

logger = logging.getLogger(__name__)

SOURCE = "scim-pipeline"
FRESHNESS_CHECK = "freshness_check"
FOR_WHOM_SENT = 50
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}

Event = Literal["run_failed", "check_failed", "sync_overdue"]


class AlertDeliveryError(Exception):
    """An alert could not be delivered (the message names the receiver's host and the status, never a secret)."""


@dataclass(frozen=True)
class Alert:
    """One alert: which target, which cycle, what failed and for whom."""

    event: Event
    target: str
    target_name: str
    run_id: str | None
    job: str | None
    partition: str
    what_failed: str
    for_whom: list[str] = field(default_factory=list)
    check: str | None = None
    asset: str | None = None

    @property
    def title(self) -> str:
        label = {"run_failed": "sync run failed", "check_failed": "check failed", "sync_overdue": "sync overdue"}
        where = f" [{self.target_name}]" if self.target_name else ""
        check = f" {self.asset}:{self.check}" if self.check else ""
        return f"scim-pipeline{where}: {label[self.event]}{check}"

    def payload(self) -> dict[str, Any]:
        """The JSON body the webhook receives (every text scrubbed)."""
        return {
            "source": SOURCE,
            "event": self.event,
            "title": scrub(self.title),
            "target": scrub(self.target),
            "target_name": self.target_name,
            "cycle": {"run_id": self.run_id, "job": self.job, "partition": self.partition},
            "check": self.check,
            "asset": self.asset,
            "what_failed": scrub(self.what_failed),
            "for_whom": [scrub(line) for line in self.for_whom[:FOR_WHOM_SENT]],
            "for_whom_total": len(self.for_whom),
        }

    def text(self) -> str:
        """The message as Slack and Teams show it."""
        body = self.payload()
        cycle = body["cycle"]
        lines = [
            body["title"],
            f"target: {body['target']}",
            f"cycle: run {cycle['run_id'] or '-'}, job {cycle['job'] or '-'}, partition {cycle['partition']}",
            f"what failed: {body['what_failed']}",
        ]
        if body["for_whom"]:
            more = body["for_whom_total"] - len(body["for_whom"])
            lines.append("for whom: " + "; ".join(body["for_whom"]) + (f" (and {more} more)" if more > 0 else ""))
        return "\n".join(lines)


class Notifier(Protocol):
    """Where an alert goes."""

    def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class WebhookNotifier:
    """A JSON POST to ``url``; the secret, if any, read from the environment variable ``secret_env`` at send time."""

    url: str
    secret_env: str | None = None
    header: str = "Authorization"
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("SCIM_ALERT_WEBHOOK_URL: an http(s) URL is needed")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            # The body names people and the header may carry a secret: plain http only on this machine.
            raise ConfigurationError("SCIM_ALERT_WEBHOOK_URL: use https (plain http only on loopback)")
        if parts.username or parts.password:
            raise ConfigurationError(
                "SCIM_ALERT_WEBHOOK_URL: must not carry credentials; use SCIM_ALERT_WEBHOOK_SECRET_ENV"
            )

    def describe(self) -> str:
        """The receiver without path or query (an incoming-webhook path is itself a secret)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def send(self, alert: Alert) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": SOURCE}
        if self.secret_env:
            secret = os.environ.get(self.secret_env)
            if not secret:
                raise AlertDeliveryError(f"the webhook secret variable {self.secret_env} is not set")
            register_secret(secret)
            headers[self.header] = f"Bearer {secret}" if self.header.lower() == "authorization" else secret
        try:
            answer = httpx.post(self.url, content=json.dumps(alert.payload()), headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as error:
            raise AlertDeliveryError(
                f"alert webhook {self.describe()} unreachable: {scrub(type(error).__name__)}"
            ) from None
        if answer.status_code >= 300:
            raise AlertDeliveryError(f"alert webhook {self.describe()} answered {answer.status_code}")


def _secret_from(variable: str, what: str) -> str:
    """A receiver's secret, read from its variable at send time and registered so every text scrubs it."""
    value = os.environ.get(variable)
    if not value:
        raise AlertDeliveryError(f"{what} variable {variable} is not set")
    register_secret(value)
    return value


@dataclass(frozen=True)
class SlackNotifier:
    """dagster-slack's client (``slack_sdk``), for failed checks; the token read from ``token_env`` at send time."""

    channel: str
    token_env: str

    def send(self, alert: Alert) -> None:
        from slack_sdk import WebClient

        token = _secret_from(self.token_env, "the Slack token")
        WebClient(token=token).chat_postMessage(channel=self.channel, text=alert.text())


@dataclass(frozen=True)
class TeamsNotifier:
    """dagster-msteams' ``TeamsClient``, for failed checks; the hook URL read from ``hook_env`` at send time."""

    hook_env: str

    def send(self, alert: Alert) -> None:
        from dagster_msteams.client import TeamsClient

        hook = _secret_from(self.hook_env, "the Teams webhook")
        TeamsClient(hook_url=hook).post_message(payload={"text": alert.text()})


# ---- what an alert says -----------------------------------------------------------------------------------------


def partition_of(tags: Mapping[str, str]) -> str:
    """The shards a run covered, as its tags say (no partition: every shard)."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        return f"{start}...{end}"
    return "every shard"


def failed_identities(state: ProvisioningStateResource, instance: DagsterInstance, run_id: str) -> list[str]:
    """Whose changes failed in run ``run_id``: its failed audit rows (resource type, operation, key, error)."""
    try:
        with state.open(instance) as store:
            failed = store.audit_query(run_id=run_id, failed=True, limit=FOR_WHOM_SENT * 4)
    except Exception as error:
        return [f"(the state store could not be read: {scrub(type(error).__name__)})"]
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for row in failed.itertuples(index=False):
        identity = (str(row.resource_type), str(row.key))
        if identity in seen:
            continue
        seen.add(identity)
        why = f": {scrub(str(row.error))}" if row.error else ""
        lines.append(f"{row.resource_type} {row.operation} {row.key}{why}"[:300])
    return lines


def _cause(failure: Any) -> str:
    """What stopped a step: a ``Failure``'s description, else the innermost error (Dagster wraps the step's own
    exception), without the exception's module path."""
    described = getattr(failure.user_failure_data, "description", None)
    if described:
        return str(described).strip()
    error = failure.error
    if error is None:
        return "the step failed"
    while error.cause is not None:
        error = error.cause
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*): ", r"\1: ", str(error.message).strip())


def run_failure_alert(
    context: RunFailureSensorContext, *, target: str, target_name: str, state: ProvisioningStateResource
) -> Alert:
    """The alert for a failed run of this target."""
    run = context.dagster_run
    steps = [f"{event.step_key}: {_cause(event.step_failure_data)}" for event in context.get_step_failure_events()]
    what = " | ".join(steps) or (context.failure_event.message or "the run failed")
    whom = failed_identities(state, context.instance, run.run_id)
    if not whom:
        whom = ["no change was attempted: the run stopped before any SCIM call"]
    return Alert(
        event="run_failed",
        target=target,
        target_name=target_name,
        run_id=run.run_id,
        job=run.job_name,
        partition=partition_of(run.tags),
        what_failed=what[:2000],
        for_whom=whom,
    )


def check_failure_alerts(
    instance: DagsterInstance,
    *,
    after: int | None,
    check_keys: Iterable[AssetCheckKey],
    target: str,
    target_name: str,
    limit: int = 200,
) -> tuple[list[Alert], int | None]:
    """Alerts for the failed evaluations of ``check_keys`` recorded after execution id ``after`` (ids are shared by
    every check), and the new cursor."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    evaluated = {
        AssetCheckExecutionRecordStatus.FAILED,
        AssetCheckExecutionRecordStatus.SUCCEEDED,  # read too, so the cursor passes them
    }
    executions = sorted(
        (
            execution
            for key in check_keys
            for execution in instance.event_log_storage.get_asset_check_execution_history(key, limit, status=evaluated)
            if after is None or execution.id > after
        ),
        key=lambda execution: execution.id,
    )
    alerts: list[Alert] = []
    cursor = after
    for execution in executions:
        cursor = execution.id
        event = execution.event.dagster_event if execution.event is not None else None
        evaluation = event.event_specific_data if event is not None else None
        if not isinstance(evaluation, AssetCheckEvaluation) or evaluation.passed:
            continue
        run_id = execution.run_id or None
        run = instance.get_run_by_id(run_id) if run_id else None
        overdue = evaluation.check_name == FRESHNESS_CHECK
        metadata = evaluation.metadata
        whom = metadata_for_whom(metadata)
        if overdue and not whom:
            whom = ["every identity of the roster: changes in the IdP are not reaching the target"]
        alerts.append(
            Alert(
                event="sync_overdue" if overdue else "check_failed",
                target=target,
                target_name=target_name,
                run_id=run_id,
                job=run.job_name if run is not None else None,
                partition=partition_of(run.tags) if run is not None else "every shard",
                what_failed=f"{evaluation.check_name} on {evaluation.asset_key.to_user_string()}: "
                + (evaluation.description or "failed"),
                for_whom=whom,
                check=evaluation.check_name,
                asset=evaluation.asset_key.to_user_string(),
            )
        )
    return alerts, cursor


# ---- the sensors ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertTarget:
    """What the sensors of one target need to word their messages."""

    target: str
    name: str
    state: ProvisioningStateResource
    suffix: str = ""


def notifiers(settings: AlertSettings) -> list[Notifier]:
    """The receivers configured in ``settings``, for failed checks (failed runs: :func:`build_alert_sensors`)."""
    found: list[Notifier] = []
    if settings.alert_webhook_url:
        found.append(
            WebhookNotifier(
                settings.alert_webhook_url,
                secret_env=settings.alert_webhook_secret_env,
                header=settings.alert_webhook_header,
            )
        )
    if settings.alert_slack_channel:
        found.append(SlackNotifier(settings.alert_slack_channel, settings.alert_slack_token_env))
    if settings.alert_teams_webhook_env:
        found.append(TeamsNotifier(settings.alert_teams_webhook_env))
    return found


def build_alert_sensors(
    settings: AlertSettings,
    *,
    where: AlertTarget,
    jobs: Sequence[Any],
    check_keys: Sequence[AssetCheckKey],
    env: Mapping[str, str] | None = None,
) -> list[SensorDefinition]:
    """The alert sensors of one target: none unless a receiver is configured (then running by default)."""
    receivers = notifiers(settings)
    if not receivers:
        return []
    environment = os.environ if env is None else env
    sensors: list[SensorDefinition] = []

    def send_all(alerts: Sequence[Alert], to: Sequence[Notifier]) -> None:
        for alert in alerts:
            for receiver in to:
                receiver.send(alert)

    webhooks = [receiver for receiver in receivers if isinstance(receiver, WebhookNotifier)]
    if webhooks:

        @run_failure_sensor(
            name=f"scim_alert_on_run_failure{where.suffix}",
            monitored_jobs=list(jobs),
            default_status=DefaultSensorStatus.RUNNING,
            description="Posts each failed run of this target to the alert webhook.",
        )
        def alert_on_run_failure(context: RunFailureSensorContext) -> None:
            send_all(
                [run_failure_alert(context, target=where.target, target_name=where.name, state=where.state)], webhooks
            )

        sensors.append(alert_on_run_failure)

    def text_of(context: RunFailureSensorContext) -> str:
        return run_failure_alert(context, target=where.target, target_name=where.name, state=where.state).text()

    if settings.alert_slack_channel:
        from dagster_slack import make_slack_on_run_failure_sensor

        token = environment.get(settings.alert_slack_token_env)
        if token:
            register_secret(token)
            sensors.append(
                make_slack_on_run_failure_sensor(
                    channel=settings.alert_slack_channel,
                    slack_token=token,
                    text_fn=text_of,
                    name=f"scim_slack_on_run_failure{where.suffix}",
                    monitored_jobs=list(jobs),
                    default_status=DefaultSensorStatus.RUNNING,
                )
            )
        else:
            logger.warning(
                "alert_slack_channel is set but %s is not: no Slack alert on failed runs",
                settings.alert_slack_token_env,
            )
    if settings.alert_teams_webhook_env:
        from dagster_msteams import make_teams_on_run_failure_sensor

        hook = environment.get(settings.alert_teams_webhook_env)
        if hook:
            register_secret(hook)
            sensors.append(
                make_teams_on_run_failure_sensor(
                    hook_url=hook,
                    message_fn=text_of,
                    name=f"scim_teams_on_run_failure{where.suffix}",
                    monitored_jobs=list(jobs),
                    default_status=DefaultSensorStatus.RUNNING,
                )
            )
        else:
            logger.warning(
                "alert_teams_webhook_env is set but %s is not: no Teams alert", settings.alert_teams_webhook_env
            )

    @sensor(
        name=f"scim_alert_on_check_failure{where.suffix}",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts on each failed check of this target (guards, health, freshness: an overdue sync).",
    )
    def alert_on_check_failure(context: SensorEvaluationContext) -> SkipReason:
        after = int(context.cursor) if context.cursor else None
        alerts, cursor = check_failure_alerts(
            context.instance, after=after, check_keys=check_keys, target=where.target, target_name=where.name
        )
        send_all(alerts, receivers)
        if cursor is not None:
            context.update_cursor(str(cursor))
        return SkipReason(f"{len(alerts)} alert(s) sent" if alerts else "no failed check")

    sensors.append(alert_on_check_failure)
    return sensors
