"""``scim-pipeline emulator`` / ``python -m scim_pipeline.emulator``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from scim_pipeline.emulator.cli import add_arguments, config_from_args, run


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@contextmanager
def emulator_process(*argv: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "scim_pipeline.emulator", "--port", "0", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        yield process, lines
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def exported(lines: list[str]) -> dict[str, str]:
    pairs = (line.strip().removeprefix("export ").split("=", 1) for line in lines if "export " in line)
    return {name: value for name, value in pairs}


def test_module_serves_on_loopback_prints_what_to_export_and_stops_on_sigterm() -> None:
    with emulator_process() as (process, lines):
        env = exported(lines)
        assert env["SCIM_BASE_URL"].startswith("http://127.0.0.1:")
        assert env["SCIM_BASE_URL"].endswith("/scim/v2")
        assert env["SCIM_TOKEN_URL"].endswith("/identity/api/oauth2/token/xpmplatform")
        assert (env["SCIM_CLIENT_ID"], env["SCIM_CLIENT_SECRET"]) == ("scim-demo", "demo-secret")
        token = httpx.post(
            env["SCIM_TOKEN_URL"],
            data={
                "grant_type": "client_credentials",
                "client_id": env["SCIM_CLIENT_ID"],
                "client_secret": env["SCIM_CLIENT_SECRET"],
            },
        ).json()["access_token"]
        listing = httpx.get(env["SCIM_BASE_URL"] + "/Users", headers={"Authorization": f"Bearer {token}"})
        assert listing.json()["totalResults"] == 0
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_a_custom_client_secret_is_never_printed() -> None:
    with emulator_process("--client", "pipeline:s3cr3t-value") as (_, lines):
        env = exported(lines)
        assert env["SCIM_CLIENT_ID"] == "pipeline"
        assert env["SCIM_CLIENT_SECRET"] == "<your secret>"
        assert not any("s3cr3t-value" in line for line in lines)


def test_non_loopback_host_is_refused_without_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--host", "0.0.0.0")) == 2  # noqa: S104
    assert "--allow-remote" in capsys.readouterr().err


def test_invalid_knobs_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--fault-rate", "1.5")) == 2
    assert "fault_rate" in capsys.readouterr().err


def test_every_option_reaches_the_config() -> None:
    args = parse(
        "--db", "x.db", "--latency-ms", "5", "--jitter-ms", "2", "--rate-limit", "50",
        "--fault-rate", "0.1", "--drop-rate", "0.05", "--seed", "9", "--client", "a:secret-b",
        "--client", "c:d", "--page-size-cap", "25", "--token-lifetime", "60",
        "--request-log", "r.jsonl", "--retry-after", "3", "--fault-scope", "POST ContainerPermissions, Users",
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.db_path, config.latency_ms, config.latency_jitter_ms, config.rate_limit_per_s) == (
        "x.db", 5.0, 2.0, 50.0,
    )  # fmt: skip
    assert (config.fault_rate, config.drop_rate, config.seed, config.page_size_cap) == (0.1, 0.05, 9, 25)
    assert config.clients == {"a": "secret-b", "c": "d"}
    assert config.fault_scope == ("POST ContainerPermissions", "Users")
    assert (config.token_lifetime_s, config.request_log_path, config.retry_after_s) == (60.0, "r.jsonl", 3)
    assert "secret-b" not in repr(config)


def test_client_option_needs_id_and_secret() -> None:
    with pytest.raises(SystemExit):
        parse("--client", "no-secret")


def test_the_interop_knobs_are_flags() -> None:
    config = config_from_args(
        parse(
            "--absolute-endpoints",
            "--refuse-attribute-path-patch",
            "--refuse-member-filter-removal",
            "--strict-literal-filters",
            "--drop-attributes",
            "title, urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        )
    )
    assert config.absolute_endpoints
    assert config.refuse_attribute_path_patch
    assert config.refuse_member_filter_removal
    assert config.strict_literal_filters
    assert config.drop_attributes == ("title", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
    assert config_from_args(parse()).drop_attributes == ()


def test_no_owner_rights_is_a_flag() -> None:
    assert config_from_args(parse()).owner_rights
    assert not config_from_args(parse("--no-owner-rights")).owner_rights
