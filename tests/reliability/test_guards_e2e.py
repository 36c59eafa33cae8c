"""Guards through the real command line and Dagster job: an empty roster, a roster that lost half its users and a
mapping change that would rewrite everyone are stopped before any SCIM call, and the message says how to allow them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scim_pipeline.cli import main
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.test_cli import summary_value

from .conftest import person, write_roster

CLIENT_ID = "guards-e2e"
CLIENT_SECRET = "guards-e2e-secret-51d2"
USERS = 60  # the mass-update guard needs at least 50 managed users


@dataclass
class Cli:
    """`scim-pipeline` run in this process with the SCIM_* environment a user would export."""

    server: EmulatorServer
    roster: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def sync(self, *args: str, **env: str) -> tuple[int, str]:
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        code = main(["sync", *args])
        captured = self.capsys.readouterr()
        for name in env:
            self.monkeypatch.delenv(name)
        return code, captured.out + captured.err

    def scim_requests(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.server.emulator.requests if r.path.startswith("/scim/")]


@pytest.fixture
def cli(
    tmp_path: Path, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    roster = write_roster(
        tmp_path / "roster",
        [person(i) for i in range(USERS)],
        ["Vault Admins"],
        [("Vault Admins", person(i)["user_name"]) for i in range(10)],
    )
    with EmulatorServer(EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET})) as server:
        for name, value in {
            "SCIM_BASE_URL": server.base_url,
            "SCIM_TOKEN_URL": server.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster),
            "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
            "SCIM_SHARDS": "2",
        }.items():
            monkeypatch.setenv(name, value)
        runner = Cli(server, roster, monkeypatch, capsys)
        code, output = runner.sync()
        assert code == 0, output
        assert summary_value(output, "users created") == USERS
        server.emulator.clear_requests()
        yield runner


def assert_stopped_before_any_call(cli: Cli, code: int, output: str) -> None:
    assert code == 1, output
    assert "stopped by a guard" in output
    assert summary_value(output, "SCIM calls") == 0
    assert cli.scim_requests() == [], "a guard must stop the cycle before any SCIM request"
    assert "Traceback" not in output


@pytest.mark.slow
def test_an_empty_roster_is_stopped_before_any_call(cli: Cli) -> None:
    write_roster(cli.roster, [], ["Vault Admins"], [])

    code, output = cli.sync()

    assert_stopped_before_any_call(cli, code, output)
    assert "empty_roster" in output
    assert "SCIM_ALLOW_MASS_CHANGES=1" in output


@pytest.mark.slow
def test_a_roster_that_lost_half_its_users_is_stopped_before_any_call(cli: Cli) -> None:
    kept = [person(i) for i in range(USERS // 2 - 1)]
    write_roster(cli.roster, kept, ["Vault Admins"], [("Vault Admins", person(i)["user_name"]) for i in range(10)])

    code, output = cli.sync()

    assert_stopped_before_any_call(cli, code, output)
    assert "shrunken_roster" in output
    assert "SCIM_MAX_DELETES" in output
    assert "SCIM_ALLOW_MASS_CHANGES=1" in output
    # The hint works: a higher SCIM_MAX_DELETES alone still meets the shrink guard; allowing mass changes passes.
    code, output = cli.sync(SCIM_MAX_DELETES=str(USERS))
    assert_stopped_before_any_call(cli, code, output)
    code, output = cli.sync("--allow-mass-changes")
    assert code == 0, output
    assert summary_value(output, "users disabled") == USERS - len(kept)


@pytest.mark.slow
def test_a_mapping_change_that_renames_everyone_is_stopped_before_any_call(cli: Cli, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        'users:\n  attributes:\n    displayName:\n      template: "{family_name}, {given_name}"\n', encoding="utf-8"
    )

    code, output = cli.sync(SCIM_MAPPING=str(mapping))

    assert_stopped_before_any_call(cli, code, output)
    assert "mass_update" in output
    assert "SCIM_ALLOW_MASS_CHANGES=1" in output
    code, output = cli.sync("--allow-mass-changes", SCIM_MAPPING=str(mapping))
    assert code == 0, output
    assert summary_value(output, "users updated") == USERS
    names = {u["userName"]: u["displayName"] for u in cli.server.emulator.store.dump()["Users"]}
    assert names[person(7)["user_name"]] == "Family7, Given7"
