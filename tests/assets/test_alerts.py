"""Alerts as a receiver gets them: a local HTTP receiver on loopback records the webhook's POSTs after a real Dagster
run that fails (credentials refused, target unreachable) and after a failed check; the sensors are Dagster's own
(a run-failure sensor, a sensor over the event log), evaluated as the daemon does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dagster import DagsterInstance, build_run_status_sensor_context, build_sensor_context

from scim_pipeline.assets.alerts import Alert, WebhookNotifier
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.redaction import register_secret
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, Pipeline

HOOK_SECRET = "hook-secret-7f3a9c2e"


@dataclass
class Receiver:
    """What the local webhook receiver was sent."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.raw.append(body)
            received.posts.append(json.loads(body))
            received.headers.append(dict(self.headers.items()))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/scim"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def alerting(pipeline: Pipeline, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.setenv("TEST_HOOK_SECRET", HOOK_SECRET)
    pipeline.env.update({"SCIM_ALERT_WEBHOOK_URL": receiver.url, "SCIM_ALERT_WEBHOOK_SECRET_ENV": "TEST_HOOK_SECRET"})
    return pipeline


def evaluate_run_failure_sensor(pipeline: Pipeline, run_id: str, failure: Any) -> None:
    sensor = pipeline.definitions().resolve_sensor_def("scim_alert_on_run_failure")
    run = pipeline.instance.get_run_by_id(run_id)
    assert run is not None
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure, dagster_instance=pipeline.instance, dagster_run=run
    ).for_run_failure()
    sensor(context)  # type: ignore[operator]


def evaluate_check_sensor(pipeline: Pipeline, instance: DagsterInstance, cursor: str | None = None) -> str | None:
    sensor = pipeline.definitions().resolve_sensor_def("scim_alert_on_check_failure")
    context = build_sensor_context(instance=instance, cursor=cursor)
    sensor.evaluate_tick(context)
    return context.cursor


def test_a_run_failed_on_refused_credentials_is_posted_naming_target_cycle_and_cause(
    alerting: Pipeline, receiver: Receiver
) -> None:
    wrong = "wrong-secret-0042-zz"
    register_secret(wrong)  # as the client registers the secret it sends
    alerting.env["SCIM_CLIENT_SECRET"] = wrong

    result = alerting.sync()
    assert not result.success
    evaluate_run_failure_sensor(alerting, result.run_id, result.get_run_failure_event())

    assert len(receiver.posts) == 1
    alert = receiver.posts[0]
    assert alert["event"] == "run_failed"
    assert alert["target"].startswith(alerting.env["SCIM_BASE_URL"])
    assert alert["cycle"] == {"run_id": result.run_id, "job": "scim_sync", "partition": "every shard"}
    assert "scim_cycle" in alert["what_failed"]
    assert "SCIM_CLIENT_SECRET" in alert["what_failed"]
    assert alert["for_whom"] == ["no change was attempted: the run stopped before any SCIM call"]
    assert receiver.headers[0]["Authorization"] == f"Bearer {HOOK_SECRET}"
    for secret in (wrong, HOOK_SECRET, CLIENT_SECRET):
        assert secret not in receiver.raw[0]
    print("ALERT AS RECEIVED:", json.dumps(alert, indent=2))


@pytest.fixture
def failing_user_creates() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        clients={CLIENT_ID: CLIENT_SECRET}, page_size_cap=5, fault_rate=1.0, fault_scope=("POST Users",)
    )
    with EmulatorServer(config) as server:
        yield server


def test_failed_changes_are_posted_for_the_run_and_for_the_failed_check_naming_whom(
    alerting: Pipeline, receiver: Receiver, failing_user_creates: EmulatorServer
) -> None:
    alerting.env.update(
        {
            "SCIM_BASE_URL": failing_user_creates.base_url,
            "SCIM_TOKEN_URL": failing_user_creates.token_url,
            "SCIM_MAX_ATTEMPTS": "1",
        }
    )

    result = alerting.sync()
    assert not result.success
    evaluate_run_failure_sensor(alerting, result.run_id, result.get_run_failure_event())
    cursor = evaluate_check_sensor(alerting, alerting.instance)

    run_alert, check_alert = receiver.posts
    assert run_alert["event"] == "run_failed"
    assert "12 change(s) failed" in run_alert["what_failed"]
    assert run_alert["for_whom_total"] == 12
    assert all(line.startswith("Users create user0") for line in run_alert["for_whom"])
    assert check_alert["event"] == "check_failed"
    assert (check_alert["check"], check_alert["asset"]) == ("failure_share", "provisioning_audit")
    assert check_alert["cycle"]["run_id"] == result.run_id
    assert check_alert["cycle"]["job"] == "scim_sync"
    assert "12 of" in check_alert["what_failed"]
    assert len(check_alert["for_whom"]) == 12

    # The cursor moved on: the same failure is not posted twice.
    evaluate_check_sensor(alerting, alerting.instance, cursor)
    assert len(receiver.posts) == 2


def test_an_unreachable_target_is_posted(alerting: Pipeline, receiver: Receiver) -> None:
    alerting.env.update({"SCIM_TOKEN_URL": "http://127.0.0.1:9/oauth2/token", "SCIM_MAX_ATTEMPTS": "1"})

    result = alerting.sync()
    assert not result.success
    evaluate_run_failure_sensor(alerting, result.run_id, result.get_run_failure_event())
    evaluate_check_sensor(alerting, alerting.instance)

    run_alert, token_alert = receiver.posts
    assert run_alert["event"] == "run_failed"
    assert token_alert["check"] == "token_obtained"
    assert token_alert["what_failed"].startswith("token_obtained on provisioning_audit: no token: the token endpoint")


def test_an_overdue_sync_is_posted_as_sync_overdue(alerting: Pipeline, receiver: Receiver) -> None:
    from datetime import UTC, datetime, timedelta

    from dagster._core.test_utils import freeze_time

    assert alerting.sync().success
    cursor = evaluate_check_sensor(alerting, alerting.instance)
    assert receiver.posts == []  # a healthy sync alerts no one

    with freeze_time(datetime.now(UTC) + timedelta(hours=3)):
        alerting.definitions().resolve_job_def("scim_health").execute_in_process(instance=alerting.instance)
    evaluate_check_sensor(alerting, alerting.instance, cursor)

    overdue = [post for post in receiver.posts if post["event"] == "sync_overdue"]
    assert {post["asset"] for post in overdue} >= {"user_provisioning", "provisioning_audit"}
    assert all(post["cycle"]["job"] == "scim_health" for post in overdue)
    assert "overdue" in overdue[0]["what_failed"].lower()


def test_a_secret_in_an_error_or_a_server_answer_is_redacted() -> None:
    register_secret("client-secret-xyz-991")
    alert = Alert(
        event="check_failed",
        target="https://tenant.example/scim/v2 (profile delinea)",
        target_name="",
        run_id="r1",
        job="scim_sync",
        partition="every shard",
        what_failed="token endpoint said: invalid client_secret=client-secret-xyz-991",
        for_whom=[
            "Users create a@example.com: 500 Authorization: Bearer eyJhbGciOiJI.eyJzdWIiOiJ4eHh4.c2lnbmF0dXJlX3Z4"
        ],
    )

    body = json.dumps(alert.payload())

    assert "client-secret-xyz-991" not in body
    assert "eyJhbGciOiJI" not in body
    assert body.count("[redacted]") == 2


def test_a_remote_plain_http_webhook_or_one_with_credentials_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_ALERT_WEBHOOK_URL: use https"):
        WebhookNotifier("http://alerts.example.com/hook")
    with pytest.raises(ConfigurationError, match="must not carry credentials"):
        WebhookNotifier("https://user:pw@alerts.example.com/hook")
    assert WebhookNotifier("https://alerts.example.com/T0/B0/xyz?token=abc").describe() == "https://alerts.example.com"


def test_no_alert_sensor_without_a_receiver(pipeline: Pipeline) -> None:
    assert not [sensor.name for sensor in pipeline.definitions().sensors or [] if sensor.name != "scim_leaver_sensor"]


def test_teams_gets_the_run_failure_through_dagster_msteams(
    pipeline: Pipeline, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TEAMS_HOOK", receiver.url)  # the incoming-webhook URL is itself a secret
    pipeline.env.update({"SCIM_ALERT_TEAMS_WEBHOOK_ENV": "TEST_TEAMS_HOOK", "SCIM_CLIENT_SECRET": "wrong-0042-zz"})
    names = {sensor.name for sensor in pipeline.definitions().sensors or [] if sensor.name != "scim_leaver_sensor"}
    assert names == {"scim_teams_on_run_failure", "scim_alert_on_check_failure"}

    result = pipeline.sync()
    sensor = pipeline.definitions().resolve_sensor_def("scim_teams_on_run_failure")
    run = pipeline.instance.get_run_by_id(result.run_id)
    assert run is not None
    sensor(  # type: ignore[operator]
        build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=pipeline.instance,
            dagster_run=run,
        ).for_run_failure()
    )
    evaluate_check_sensor(pipeline, pipeline.instance)

    card, check_card = receiver.raw
    assert "sync run failed" in card
    assert result.run_id in card
    assert "SCIM_CLIENT_SECRET" in card
    assert "wrong-0042-zz" not in card
    assert "token_obtained" in check_card
