"""The LDAP source against a real Active Directory domain controller (Samba's; see samba_dc.py and conftest.py).

Every test reads the domain from its root, over LDAPS verified against the DC's own CA, as an AD admin would point
the source at it. Tests that change the directory work on entries of their own, or on moves the others ignore.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ldap3 import MODIFY_ADD, NONE, Connection, Server
from pydantic import SecretStr

from scim_pipeline.sources import RawRoster, RosterError
from scim_pipeline.sources._incremental import MemoryWatermarkStore
from scim_pipeline.sources.ldap import LdapRosterSource, LdapSettings, _VerifiedTls
from tests.sources.conftest import AD_USERS
from tests.sources.samba_dc import (
    ADMIN_DN,
    ADMIN_PASSWORD,
    BIG_LIST_SIZE,
    DC_NAME,
    DOMAIN_DN,
    GROUPS,
    MOVED,
    SALES,
    SEEDED_GROUPS,
    STAFF,
    TEAM_SIZE,
    DomainController,
    contractors,
    group_dn,
    manager_of,
    team_members,
    user_dn,
    user_name,
)

SEEDED_USERS = {user_name(i) for i in range(AD_USERS)}
BUILT_IN_USERS = {"Administrator", "Guest", "krbtgt", "dns-dc1"}
BUILT_IN_GROUPS = {"Domain Users", "Domain Admins", "Administrators", "Users", "Schema Admins", "Guests"}


def ad_settings(dc: DomainController, **overrides: object) -> LdapSettings:
    values: dict[str, object] = {
        "url": dc.ldaps_url,
        "ca_bundle": dc.ca_bundle,
        "bind_dn": ADMIN_DN,
        "bind_password": SecretStr(ADMIN_PASSWORD),
        "flavor": "ad",
        "user_base": DOMAIN_DN,
        "group_base": DOMAIN_DN,
    }
    values.update(overrides)
    return LdapSettings.model_validate(values)


def admin(dc: DomainController) -> Connection:
    tls = _VerifiedTls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(dc.ca_bundle), sni=DC_NAME)
    server = Server(DC_NAME, 636, use_ssl=True, tls=tls, get_info=NONE)
    return Connection(server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)


def user_names(roster: RawRoster) -> set[str]:
    return set(roster.users.frame["user_name"])


def group_names(roster: RawRoster) -> set[str]:
    assert roster.groups is not None
    return set(roster.groups.frame["group_name"])


def members_of(roster: RawRoster, group: str) -> set[str]:
    assert roster.memberships is not None
    frame = roster.memberships.frame
    return set(frame.loc[frame["group_name"] == group, "user_name"])


def pairs(roster: RawRoster) -> set[tuple[str, str]]:
    assert roster.memberships is not None
    frame = roster.memberships.frame
    return set(zip(frame["group_name"], frame["user_name"], strict=True))


def managers(roster: RawRoster) -> dict[str, str | None]:
    frame = roster.users.frame
    return {
        name: None if pd.isna(manager) else str(manager)
        for name, manager in zip(frame["user_name"], frame["manager"], strict=True)
    }


@pytest.fixture
def incremental(samba_dc: DomainController, tmp_path: Path) -> LdapRosterSource:
    """A source with a cache and a watermark store: its second read is incremental."""
    return LdapRosterSource(settings=ad_settings(samba_dc), cache_dir=tmp_path, watermarks=MemoryWatermarkStore())


def add_user(dc: DomainController, name: str, *, ou: str = SALES, groups: tuple[str, ...] = ()) -> str:
    dn = f"CN={name},{ou}"
    with admin(dc) as connection:
        attributes = {"sAMAccountName": name, "userPrincipalName": f"{name}@corp.example.test", "mail": f"{name}@x"}
        assert connection.add(dn, ["user"], {**attributes, "userAccountControl": "544"}), connection.result
        for group in groups:
            assert connection.modify(group_dn(group), {"member": [(MODIFY_ADD, [dn])]}), connection.result
    return dn


def test_built_in_accounts_groups_and_computers_are_left_out(samba_dc: DomainController) -> None:
    roster = LdapRosterSource(settings=ad_settings(samba_dc)).read()

    assert user_names(roster) >= SEEDED_USERS
    assert not user_names(roster) & (BUILT_IN_USERS | {"WS01$"})
    assert user_names(roster) - SEEDED_USERS <= {"leaver1", "mover1", "leaver2"}  # what the other tests add
    assert group_names(roster) == set(SEEDED_GROUPS)
    users = roster.users.frame.set_index("user_name")
    assert users.loc["u0005", "email"] == "u0005@corp.example.test"  # no mail: userPrincipalName
    assert users.loc["u0006", "email"] == "u0006@example.com"
    assert users.loc[user_name(AD_USERS - 1), "active"] == "false"  # userAccountControl ACCOUNTDISABLE


def test_built_ins_and_computers_come_when_configured(samba_dc: DomainController) -> None:
    settings = ad_settings(samba_dc, include_builtin_users=True, include_builtin_groups=True, include_computers=True)

    roster = LdapRosterSource(settings=settings).read()

    assert BUILT_IN_USERS | {"WS01$"} <= user_names(roster)
    assert group_names(roster) >= BUILT_IN_GROUPS


def test_domain_users_has_its_members_through_their_primary_group(samba_dc: DomainController) -> None:
    roster = LdapRosterSource(settings=ad_settings(samba_dc, include_builtin_groups=True)).read()

    # primaryGroupID 513: AD lists none of them in Domain Users' member.
    assert members_of(roster, "Domain Users") >= SEEDED_USERS


def test_a_primary_group_other_than_domain_users_has_its_members(samba_dc: DomainController) -> None:
    roster = LdapRosterSource(settings=ad_settings(samba_dc)).read()

    assert members_of(roster, "Contractors") == {user_name(i) for i in contractors(AD_USERS)}


def test_a_hidden_built_in_group_passes_its_members_to_the_group_it_is_nested_in(samba_dc: DomainController) -> None:
    roster = LdapRosterSource(settings=ad_settings(samba_dc)).read()

    assert "Domain Users" not in group_names(roster)
    assert members_of(roster, "All Staff") >= SEEDED_USERS  # All Staff ⊃ Domain Users ⊃ everyone (primary group)


def test_nested_groups_and_managers_resolve(samba_dc: DomainController) -> None:
    roster = LdapRosterSource(settings=ad_settings(samba_dc)).read()

    team = {user_name(i) for t in (0, 1, 2) for i in team_members(t, AD_USERS)}
    assert members_of(roster, "Engineering All") == team  # ⊃ Team 00, Team 01 ⊃ Team 02
    assert managers(roster)["u0041"] == "u0040"
    assert managers(roster)["u0040"] is None


def test_moving_a_manager_and_a_nested_group_to_another_ou_changes_nothing(
    samba_dc: DomainController, incremental: LdapRosterSource
) -> None:
    before, first = incremental.read_with_report()
    manager = 40
    with admin(samba_dc) as connection:
        assert connection.modify_dn(user_dn(manager, AD_USERS), f"CN={user_name(manager)}", new_superior=MOVED)
        assert connection.modify_dn(group_dn("Team 02"), "CN=Team 02", new_superior=MOVED)

    after, report = incremental.read_with_report()

    assert first.mode == "full"
    assert report.mode == "incremental"
    # AD rewrote the moved DNs inside Team 01's member and the reports' manager without touching them: only the
    # two moved entries were read again (and the moved user's primary group, Domain Users, looked up by its SID).
    assert report.entries_fetched == 2 + 1
    assert pairs(after) == pairs(before)
    assert managers(after) == managers(before)
    reports = [user_name(i) for i in range(AD_USERS) if manager_of(i) == manager]
    assert {managers(after)[name] for name in reports} == {user_name(manager)}
    assert group_names(after) == group_names(before)


def test_a_deleted_user_leaves_at_the_next_incremental_read(
    samba_dc: DomainController, incremental: LdapRosterSource
) -> None:
    leaver = add_user(samba_dc, "leaver1", groups=("Team 05",))
    before = incremental.read()
    assert ("Team 05", "leaver1") in pairs(before)
    with admin(samba_dc) as connection:
        assert connection.delete(leaver), connection.result

    after, report = incremental.read_with_report()

    assert report.mode == "incremental"
    assert "leaver1" not in user_names(after)
    assert "leaver1" not in members_of(after, "Team 05")
    assert user_names(after) == user_names(before) - {"leaver1"}


def test_a_user_moved_out_of_the_user_base_leaves_at_the_next_incremental_read(
    samba_dc: DomainController, tmp_path: Path
) -> None:
    add_user(samba_dc, "mover1", ou=SALES, groups=("Team 06",))
    source = LdapRosterSource(
        settings=ad_settings(samba_dc, user_base=STAFF, group_base=GROUPS),
        cache_dir=tmp_path,
        watermarks=MemoryWatermarkStore(),
    )
    assert "mover1" in user_names(source.read())
    with admin(samba_dc) as connection:
        assert connection.modify_dn(f"CN=mover1,{SALES}", "CN=mover1", new_superior=MOVED), connection.result

    after, report = source.read_with_report()

    assert report.mode == "incremental"
    assert "mover1" not in user_names(after)
    assert "mover1" not in members_of(after, "Team 06")


def test_ldaps_is_verified_against_the_dcs_own_ca(samba_dc: DomainController) -> None:
    untrusted = LdapRosterSource(settings=ad_settings(samba_dc, ca_bundle=None))
    trusted = LdapRosterSource(settings=ad_settings(samba_dc))

    with pytest.raises(RosterError, match="cannot connect"):
        untrusted.read()
    roster = trusted.read()
    assert user_names(roster) >= SEEDED_USERS
    assert not user_names(roster) & BUILT_IN_USERS


def test_starttls_is_verified_against_the_dcs_own_ca(samba_dc: DomainController) -> None:
    settings = ad_settings(samba_dc, url=f"ldap://{DC_NAME}", start_tls=True, group_base=None)

    assert user_names(LdapRosterSource(settings=settings).read()) >= SEEDED_USERS


def test_a_plain_bind_refused_for_want_of_tls_names_tls_as_the_fix(samba_dc: DomainController) -> None:
    source = LdapRosterSource(settings=ad_settings(samba_dc, url=samba_dc.ldap_url, ca_bundle=None))

    with pytest.raises(RosterError) as caught:
        source.read()

    message = str(caught.value)
    assert "strongerAuthRequired" in message
    assert "ldaps://" in message
    assert "SCIM_LDAP_START_TLS" in message
    assert "SCIM_LDAP_BIND_PASSWORD" not in message  # the password is not what is wrong
    assert ADMIN_PASSWORD not in message


def test_large_groups_are_read_by_range_retrieval(samba_dc: DomainController) -> None:
    def read(range_size: int) -> tuple[RawRoster, int]:
        settings = ad_settings(samba_dc, group_base=GROUPS, group_filter="(cn=Big List)", range_size=range_size)
        roster, report = LdapRosterSource(settings=settings).read_with_report()
        return roster, report.requests

    whole, one_range = read(1500)
    ranged, in_ranges = read(10)

    expected = {user_name(i) for i in range(BIG_LIST_SIZE)}
    assert members_of(whole, "Big List") == members_of(ranged, "Big List") == expected
    # The DC answered member;range=0-9 with the group, then 10-19, 20-29 and 30-* when asked: three more requests.
    assert in_ranges - one_range == 3


def test_every_team_member_is_read_with_the_smallest_range(samba_dc: DomainController) -> None:
    roster = LdapRosterSource(settings=ad_settings(samba_dc, range_size=1)).read()

    assert members_of(roster, "Team 03") == {user_name(i) for i in team_members(3, AD_USERS)}
    assert len(members_of(roster, "Team 03")) == TEAM_SIZE


@pytest.mark.slow
def test_a_sync_from_active_directory_through_moves_and_a_deletion(samba_dc: DomainController, tmp_path: Path) -> None:
    """`scim-pipeline sync` with SCIM_SOURCE=ldap against the DC over LDAPS, into the emulator: moving a manager and
    a nested group between OUs writes nothing; a deleted user is disabled by the next cycle."""
    from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer

    leaver = add_user(samba_dc, "leaver2", groups=("Team 07", "Team 08"))
    with EmulatorServer(EmulatorConfig()) as server:
        env = {name: value for name, value in os.environ.items() if not name.startswith("SCIM_")}
        env.update(
            {
                "DAGSTER_HOME": str(tmp_path / "dagster_home"),
                "SCIM_BASE_URL": server.base_url,
                "SCIM_TOKEN_URL": server.token_url,
                "SCIM_CLIENT_ID": DEMO_CLIENT_ID,
                "SCIM_CLIENT_SECRET": DEMO_CLIENT_SECRET,
                "SCIM_SOURCE": "ldap",
                "SCIM_LDAP_FLAVOR": "ad",
                "SCIM_LDAP_URL": samba_dc.ldaps_url,
                "SCIM_LDAP_CA_BUNDLE": str(samba_dc.ca_bundle),
                "SCIM_LDAP_BIND_DN": ADMIN_DN,
                "SCIM_LDAP_BIND_PASSWORD": ADMIN_PASSWORD,
                "SCIM_LDAP_USER_BASE": DOMAIN_DN,
                "SCIM_LDAP_GROUP_BASE": DOMAIN_DN,
                "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
            }
        )

        def sync() -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "scim_pipeline.cli", "sync"]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            assert ADMIN_PASSWORD not in done.stdout + done.stderr
            return done

        def writes() -> list[tuple[str, str]]:
            scim = [r for r in server.emulator.requests if "/oauth2/" not in r.path]  # a token request writes nothing
            return [(r.method, r.path) for r in scim if r.method in ("POST", "PUT", "PATCH", "DELETE")]

        sync()
        target = server.emulator.store.dump()
        names = {user["userName"] for user in target["Users"]}
        assert SEEDED_USERS - {user_name(i) for i in range(AD_USERS - 2, AD_USERS)} <= names  # disabled: never created
        assert not names & BUILT_IN_USERS
        assert not {group["displayName"] for group in target["Groups"]} & BUILT_IN_GROUPS
        with admin(samba_dc) as connection:
            assert connection.modify_dn(user_dn(60, AD_USERS), "CN=u0060", new_superior=MOVED)  # manages u0061…
            assert connection.modify_dn(group_dn("Team 01"), "CN=Team 01", new_superior=MOVED)  # ⊂ Engineering All
        server.emulator.clear_requests()

        sync()

        assert writes() == []
        with admin(samba_dc) as connection:
            assert connection.delete(leaver)

        sync()

        users = {user["userName"]: user for user in server.emulator.store.dump()["Users"]}
        assert users["leaver2"]["active"] is False
        assert {method for method, _ in writes()} == {"PATCH"}  # the user disabled, its memberships removed
