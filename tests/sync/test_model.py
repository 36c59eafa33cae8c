"""The change-set engine as a model: random roster edits and sync cycles; after each cycle the target equals the
roster for what we manage, and what we do not manage is untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scim_pipeline.emulator import EmulatorConfig, create_app
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.guards import GuardSettings
from scim_pipeline.sync.state import ProvisioningState

from .conftest import make_roster, user

NAMES = st.sampled_from(["ann", "bo", "dé", 'q"uote', "back\\slash", "Bo"])
GROUPS = st.sampled_from(["Admins", "Ops", "Dev"])
TITLES = st.one_of(st.none(), st.text(min_size=1, max_size=12).filter(lambda t: t.strip() == t and "\x00" not in t))


class SyncModel(RuleBasedStateMachine):
    """The roster is the model; the emulator is the system under test, seen only through the SCIM API."""

    @initialize()
    def start(self) -> None:
        self.app = create_app(EmulatorConfig())
        self.app.emulator.store.insert("Users", {"userName": "stranger", "active": True, "title": "keep"})
        self.app.emulator.store.insert("Groups", {"displayName": "Foreign"})
        self.state = ProvisioningState.open(":memory:")
        self.people: dict[str, dict[str, Any]] = {}
        self.groups: set[str] = set()
        self.members: set[tuple[str, str]] = set()
        self.ever_synced: set[str] = set()
        self.synced = False

    def teardown(self) -> None:
        if hasattr(self, "state"):
            self.state.close()
            self.app.emulator.close()

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
        roster = make_roster(
            [user(n, title=p["title"], active=p["active"]) for n, p in self.people.items()],
            sorted(self.groups),
            sorted(self.members),
        )

        async def cycle() -> None:
            connection = ConnectionSettings(
                base_url="http://127.0.0.1:8999/scim/v2",
                client_id="scim-demo",
                client_secret="demo-secret",
                max_retry_wait_s=0.01,
            )
            async with ScimClient(connection, transport=httpx.ASGITransport(app=self.app)) as client:
                report = await run_cycle(
                    client, self.state, roster, run_id="model", guards=GuardSettings(allow_mass_changes=True)
                )
                assert not report.failed, report.execution.failures

        asyncio.run(cycle())
        # Managers are not modelled; a second cycle is a no-op then.
        self.ever_synced |= {n for n, p in self.people.items() if p["active"]}
        self.synced = True

    @invariant()
    def target_matches_roster_after_a_sync(self) -> None:
        if not getattr(self, "synced", False):
            return
        dump = self.app.emulator.store.dump()
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


TestSyncModel = pytest.mark.slow(SyncModel.TestCase)
TestSyncModel.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
