"""The CLI's Dagster home: its first use is safe when many processes start at once, and a broken one is reported
in one line with the fix."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from scim_pipeline.resources.home import INSTANCE_YAML, prepare_dagster_home
from scim_pipeline.scim import ConfigurationError

# What the CLI does: prepare the home, then open the instance and run a job in-process against it.
_FIRST_USE = """
import os, sys
from scim_pipeline.resources.home import prepare_dagster_home
home = prepare_dagster_home(sys.argv[1])
os.environ["DAGSTER_HOME"] = str(home)
from dagster import DagsterInstance, job, op

@op
def hello() -> int:
    return 1

@job
def tiny():
    hello()

with DagsterInstance.get() as instance:
    result = tiny.execute_in_process(instance=instance)
    print("run", result.run_id, "success" if result.success else "failure")
"""


def _first_use(home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.Popen(
        [sys.executable, "-c", _FIRST_USE, str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_twenty_concurrent_first_uses_of_a_fresh_home_all_work_and_so_does_every_later_run(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    processes = [_first_use(home) for _ in range(20)]
    results = [process.communicate(timeout=600) for process in processes]
    failures = [err[-2000:] for (out, err), p in zip(results, processes, strict=True) if p.returncode != 0]
    assert failures == []
    assert all(out.strip().endswith("success") for out, _ in results)
    for _ in range(2):
        later = _first_use(home)
        out, err = later.communicate(timeout=300)
        assert later.returncode == 0, err[-2000:]
        assert out.strip().endswith("success")
    with sqlite3.connect(home / "history" / "runs.db") as runs:
        assert runs.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
        assert runs.execute("SELECT count(*) FROM runs").fetchone() == (22,)


def test_a_fresh_home_gets_the_instance_yaml_and_dagsters_storages(tmp_path: Path) -> None:
    home = prepare_dagster_home(tmp_path / "nested" / "home")
    assert home == tmp_path / "nested" / "home"
    assert (home / "dagster.yaml").read_text(encoding="utf-8") == INSTANCE_YAML
    assert (home / "history" / "runs.db").exists()
    assert (home / "schedules" / "schedules.db").exists()
    assert [p.name for p in home.iterdir() if p.name.startswith(".dagster.yaml.")] == [], "no temp file left"
    with DagsterInstance.from_config(str(home)) as instance:  # the target's pool is limited before any daemon runs
        assert instance.event_log_storage.get_concurrency_info("scim_target").slot_count == 1


def test_an_existing_instance_yaml_is_kept(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n", encoding="utf-8")
    prepare_dagster_home(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text(encoding="utf-8") == "telemetry:\n  enabled: true\n"


def test_a_home_with_two_alembic_heads_is_reported_in_one_line_with_the_fix(tmp_path: Path) -> None:
    prepare_dagster_home(tmp_path)
    with sqlite3.connect(tmp_path / "history" / "runs.db") as runs:
        # What two processes initialising one fresh home together left behind before this fix.
        runs.execute("INSERT INTO alembic_version VALUES ('16e3655b4d9b')")
    (tmp_path / ".scim_pipeline.ready").unlink()  # broken by an earlier version, which left no ready marker
    with pytest.raises(ConfigurationError) as raised:
        prepare_dagster_home(tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "more than one head" in message
    assert "move it away" in message
    assert "dagster instance migrate" in message


def test_a_home_that_cannot_be_created_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="cannot be created"):
        prepare_dagster_home(blocker / "home")


def test_a_ready_home_is_not_opened_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_dagster_home(tmp_path)
    opened: list[Path] = []
    monkeypatch.setattr("scim_pipeline.resources.home._open_storages_once", opened.append)

    prepare_dagster_home(tmp_path)
    assert opened == [], "a home set up by this Dagster version was opened again"
    (tmp_path / ".scim_pipeline.ready").write_text("0.0.0", encoding="utf-8")  # another Dagster version
    prepare_dagster_home(tmp_path)
    assert opened == [tmp_path]
