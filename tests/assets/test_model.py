"""The product as a model: random roster edits and sync cycles, each cycle a real run of the code location's sync
job (the roster written as CSV files, the emulator over loopback HTTP, a Dagster instance); after each cycle the
target equals the roster for what we manage, and what we do not manage is untouched."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scim_pipeline.assets.jobs import cycle_run_config
from scim_pipeline.assets.location import build_definitions
from scim_pipeline.assets.partitions import range_tags
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.reliability.conftest import person as roster_row
from tests.reliability.conftest import write_roster

CLIENT_ID = "model-tests"
CLIENT_SECRET = "model-secret-8c2a"
SHARDS = 2

NAMES = st.sampled_from(["ann", "bo", "dé", 'q"uote', "back\\slash", "Bo"])
GROUPS = st.sampled_from(["Admins", "Ops", "Dev"])
# Control characters get a roster row rejected (held, tested in tests/sync/test_roster.py): the model keeps to values
# a roster file can carry, non-ASCII included.
TITLES = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
        lambda t: t.strip() == t
    ),
)


class SyncModel(RuleBasedStateMachine):
    """The roster is the model; the emulator is the system under test, seen only through the SCIM API."""

    @initialize()
    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="scim-model-"))
        self.server = EmulatorServer(EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}))
        self.server.start()
        self.server.emulator.store.insert("Users", {"userName": "stranger", "active": True, "title": "keep"})
        self.server.emulator.store.insert("Groups", {"displayName": "Foreign"})
        self.instance = DagsterInstance.ephemeral(tempdir=str(self.folder / "dagster_home"))
        env = {
            "SCIM_BASE_URL": self.server.base_url,
            "SCIM_TOKEN_URL": self.server.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(self.folder / "roster"),
            "SCIM_STATE_URL": f"sqlite:///{self.folder / 'state.sqlite'}",
            "SCIM_SHARDS": str(SHARDS),
        }
        self.monkeypatch = pytest.MonkeyPatch()
        self.monkeypatch.setenv("SCIM_CLIENT_SECRET", CLIENT_SECRET)  # the resource reads it as an EnvVar
        self.job = build_definitions(env).resolve_job_def("scim_sync")
        self.people: dict[str, dict[str, Any]] = {}
        self.groups: set[str] = set()
        self.members: set[tuple[str, str]] = set()
        self.ever_synced: set[str] = set()
        self.synced = False

    def teardown(self) -> None:
        if hasattr(self, "server"):
            self.server.stop()
            self.instance.dispose()
            self.monkeypatch.undo()
            shutil.rmtree(self.folder, ignore_errors=True)

    @rule(name=NAMES, title=TITLES, active=st.booleans())
    def put_user(self, name: str, title: str | None, active: bool) -> None:
        existing = {k.casefold() for k in self.people}
        if name.casefold() in existing and name not in self.people:
            return  # keys differing only in case are one identity: the roster layer rejects the duplicate
        self.people[name] = {"title": title, "active": active}
        self.synced = False

    @precondition(lambda self: bool(self.people))
    @rule(data=st.data())
    def remove_user(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.people)))
        del self.people[name]
        self.members = {(g, u) for g, u in self.members if u != name}
        self.synced = False

    @rule(group=GROUPS)
    def toggle_group(self, group: str) -> None:
        if group in self.groups:
            self.groups.discard(group)
            self.members = {(g, u) for g, u in self.members if g != group}
        else:
            self.groups.add(group)
        self.synced = False

    @precondition(lambda self: bool(self.people) and bool(self.groups))
    @rule(data=st.data())
    def toggle_membership(self, data: st.DataObject) -> None:
        pair = (data.draw(st.sampled_from(sorted(self.groups))), data.draw(st.sampled_from(sorted(self.people))))
        self.members ^= {pair}
        self.synced = False

    @rule(name=NAMES, title=TITLES, active=st.booleans())
    def edit_then_sync(self, name: str, title: str | None, active: bool) -> None:
        self.put_user(name, title, active)
        self.sync()

    @rule()
    def sync(self) -> None:
        users = [
            roster_row(0, user_name=name, external_id="", title=p["title"] or "", active=str(p["active"]).lower())
            for name, p in self.people.items()
        ]
        write_roster(self.folder / "roster", users, sorted(self.groups), sorted(self.members))
        result = self.job.execute_in_process(
            instance=self.instance,
            tags=range_tags(0, SHARDS - 1),
            run_config=cycle_run_config("scim_cycle", allow_mass_changes=True),
            raise_on_error=False,
        )
        failures = [e.step_failure_data.error for e in result.all_events if e.is_step_failure and e.step_failure_data]
        assert result.success, [error.message if error else "?" for error in failures]
        # Managers are not modelled; a second cycle is a no-op then.
        self.ever_synced |= {n for n, p in self.people.items() if p["active"]}
        self.synced = True

    @invariant()
    def target_matches_roster_after_a_sync(self) -> None:
        if not getattr(self, "synced", False):
            return
        dump = self.server.emulator.store.dump()
        users = {u["userName"]: u for u in dump["Users"]}
        assert users["stranger"]["active"] is True
        assert users["stranger"]["title"] == "keep"
        assert "Foreign" in {g["displayName"] for g in dump["Groups"]}
        for name, person in self.people.items():
            if name not in users:
                assert not person["active"]
                assert name not in self.ever_synced
                continue
            assert users[name]["active"] is person["active"]
            assert users[name].get("title") == person["title"]
        for name, target_user in users.items():
            if name != "stranger" and name not in self.people:
                assert target_user["active"] is False, f"{name} left the roster and is disabled"
        by_id = {u["id"]: u["userName"] for u in dump["Users"]}
        groups = {g["displayName"]: g for g in dump["Groups"]}
        for group in self.groups:
            present = {by_id[m["value"]] for m in groups[group].get("members", [])}
            wanted = {u for g, u in self.members if g == group and u in users}
            assert present == wanted


TestSyncModel = pytest.mark.timeout(900)(pytest.mark.slow(SyncModel.TestCase))
TestSyncModel.settings = settings(
    max_examples=10,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
