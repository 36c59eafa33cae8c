"""The LDAP source against a real OpenLDAP server (see conftest.py): full, nested, incremental and TLS reads."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, Connection
from pydantic import SecretStr

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources import RawRoster, RosterError
from scim_pipeline.sources._incremental import FullReadPolicy, MemoryWatermarkStore
from scim_pipeline.sources.ldap import LdapRosterSource, LdapSettings
from scim_pipeline.sync.plan.mapping import build_roster
from tests.sources.conftest import (
    ADMIN_DN,
    ADMIN_PASSWORD,
    GROUPS,
    MEMBERS_PER_GROUP,
    PEOPLE,
    SUFFIX,
    Directory,
    group_dn,
    user_dn,
)


def settings(url: str, **overrides: object) -> LdapSettings:
    values: dict[str, object] = {
        "url": url,
        "bind_dn": ADMIN_DN,
        "bind_password": SecretStr(ADMIN_PASSWORD),
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "clock_skew_s": 0.0,
    }
    values.update(overrides)
    return LdapSettings.model_validate(values)


def admin(directory: Directory) -> Connection:
    return Connection(directory.url, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)


def members_of(roster_memberships: object, group: str) -> set[str]:
    frame = roster_memberships.frame  # type: ignore[attr-defined]
    return set(frame.loc[frame["group_name"] == group, "user_name"])


def test_full_read_returns_every_user_group_and_membership(directory: Directory) -> None:
    source = LdapRosterSource(settings=settings(directory.url))

    roster, report = source.read_with_report()

    users = roster.users.frame
    assert len(users) == directory.users
    assert roster.groups is not None
    assert len(roster.groups.frame) == directory.groups
    ann = users.set_index("user_name").loc["u00042"]
    assert ann["email"] == "u00042@example.org"
    assert ann["given_name"] == "Given42"
    assert ann["family_name"] == "Family42"
    assert ann["display_name"] == "User 42"
    assert ann["employee_number"] == "00042"
    assert ann["department"] == "D2"
    assert ann["active"] == "true"
    assert ann["manager"] == "u00000"  # the manager DN became that user's user_name
    assert len(ann["external_id"]) == 36  # entryUUID
    assert ann["source_ref"] == ann["external_id"]  # entries are known by entryUUID, not by their DN
    assert report.mode == "full"
    assert report.entries_fetched == directory.users + directory.groups
    assert report.pages == 10 + 1  # 5,000 users in pages of 500, then the groups
    assert report.rows["users"] == directory.users


def test_the_ldap_roster_passes_the_default_mapping(directory: Directory) -> None:
    raw = LdapRosterSource(settings=settings(directory.url)).read()

    roster = build_roster(raw, shards=4)

    assert len(roster.users) == directory.users
    assert roster.rejected.empty
    assert len(roster.memberships) > directory.groups * MEMBERS_PER_GROUP


def test_nested_groups_are_flattened_and_a_loop_is_tolerated(directory: Directory) -> None:
    memberships = LdapRosterSource(settings=settings(directory.url)).read().memberships
    assert memberships is not None

    direct = {f"u{k:05d}" for k in range(MEMBERS_PER_GROUP)}
    chain = {f"u{k:05d}" for k in range(10 * MEMBERS_PER_GROUP)}  # g000 holds g001 … g009
    assert direct < members_of(memberships, "g000") == chain
    g010 = {f"u{k:05d}" for k in range(10 * MEMBERS_PER_GROUP, 11 * MEMBERS_PER_GROUP)}
    g011 = {f"u{k:05d}" for k in range(11 * MEMBERS_PER_GROUP, 12 * MEMBERS_PER_GROUP)}
    assert members_of(memberships, "g010") == members_of(memberships, "g011") == g010 | g011


def test_page_size_changes_the_requests_not_the_roster(directory: Directory) -> None:
    source = LdapRosterSource(settings=settings(directory.url, page_size=2_000, group_base=None))

    roster, report = source.read_with_report()

    assert len(roster.users.frame) == directory.users
    assert report.pages == 3
    assert roster.groups is not None
    assert roster.groups.frame.empty


def test_an_incremental_read_fetches_only_the_changed_entries(directory: Directory, tmp_path: Path) -> None:
    watermarks = MemoryWatermarkStore()
    source = LdapRosterSource(settings=settings(directory.url), cache_dir=tmp_path, watermarks=watermarks)
    _, first = source.read_with_report()
    assert first.mode == "full"
    assert first.reason == "no watermark yet"
    time.sleep(1.05)  # the changes must land in a later second than the full read started in
    changed_users = [4_990 + k for k in range(8)]
    with admin(directory) as connection:
        for i in changed_users:
            assert connection.modify(user_dn(i), {"title": [(MODIFY_REPLACE, ["Changed"])]})
        assert connection.modify(group_dn(150), {"member": [(MODIFY_DELETE, [user_dn(150 * 25)])]})
        assert connection.modify(group_dn(151), {"member": [(MODIFY_ADD, [user_dn(7)])]})

    roster, report = source.read_with_report()

    assert report.mode == "incremental"
    assert report.entries_fetched == 10
    assert report.entries_listed >= directory.users + directory.groups  # the deletion check: entryUUIDs only
    assert report.watermark_before == first.watermark_after
    users = roster.users.frame.set_index("user_name")
    assert len(users) == directory.users  # the complete roster, merged with the cache
    assert set(users.index[users["title"] == "Changed"]) == {f"u{i:05d}" for i in changed_users}
    assert roster.memberships is not None
    assert f"u{150 * 25:05d}" not in members_of(roster.memberships, "g150")
    assert "u00007" in members_of(roster.memberships, "g151")
    assert len(roster.memberships.frame) == len(first_memberships(source, tmp_path))


def first_memberships(source: LdapRosterSource, _tmp: Path) -> list[tuple[str, str]]:
    """The memberships a fresh full read finds now (no cache): what the merged roster must equal."""
    fresh = LdapRosterSource(settings=source.settings).read().memberships
    assert fresh is not None
    return list(zip(fresh.frame["group_name"], fresh.frame["user_name"], strict=True))


def test_without_the_deletion_check_a_deleted_entry_goes_at_the_periodic_full_read(
    directory: Directory, tmp_path: Path
) -> None:
    watermarks = MemoryWatermarkStore()
    source = LdapRosterSource(
        settings=settings(directory.url, full_read=FullReadPolicy(every_cycles=2), find_deletions=False),
        cache_dir=tmp_path,
        watermarks=watermarks,
    )
    with admin(directory) as connection:
        assert connection.add(f"uid=leaver,{PEOPLE}", ["inetOrgPerson"], {"uid": "leaver", "cn": "Leaver", "sn": "L"})
    assert "leaver" in set(source.read().users.frame["user_name"])
    with admin(directory) as connection:
        assert connection.delete(f"uid=leaver,{PEOPLE}")

    kept, incremental = source.read_with_report()
    roster, full = source.read_with_report()

    assert incremental.mode == "incremental"
    assert "leaver" in set(kept.users.frame["user_name"])
    assert full.mode == "full"
    assert "every 2 reads" in full.reason
    assert "leaver" not in set(roster.users.frame["user_name"])


def test_a_deleted_entry_leaves_at_the_next_incremental_read(directory: Directory, tmp_path: Path) -> None:
    source = LdapRosterSource(settings=settings(directory.url), cache_dir=tmp_path, watermarks=MemoryWatermarkStore())
    leaver = f"uid=leaver2,{PEOPLE}"
    with admin(directory) as connection:
        assert connection.add(leaver, ["inetOrgPerson"], {"uid": "leaver2", "cn": "Leaver", "sn": "L"})
        assert connection.modify(group_dn(20), {"member": [(MODIFY_ADD, [leaver])]})
    assert "leaver2" in members_of(source.read().memberships, "g020")
    with admin(directory) as connection:
        assert connection.delete(leaver)

    roster, report = source.read_with_report()

    assert report.mode == "incremental"
    assert "leaver2" not in set(roster.users.frame["user_name"])
    assert "leaver2" not in members_of(roster.memberships, "g020")
    # The deletion check lists every entry's entryUUID (one attribute each), not the entries.
    assert report.entries_listed >= directory.users + directory.groups
    assert report.entries_fetched < 10


def test_moving_a_manager_and_a_nested_group_to_another_ou_changes_nothing(
    directory: Directory, tmp_path: Path
) -> None:
    moved = f"ou=moved,{SUFFIX}"
    with admin(directory) as connection:
        connection.add(moved, ["organizationalUnit"], {"ou": "moved"})  # already there when run twice
    source = LdapRosterSource(
        settings=settings(directory.url, user_base=SUFFIX, group_base=SUFFIX),
        cache_dir=tmp_path,
        watermarks=MemoryWatermarkStore(),
    )
    before = source.read()
    with admin(directory) as connection:
        assert connection.modify_dn(user_dn(300), "uid=u00300", new_superior=moved)  # manages u00301 … u00399
        assert connection.modify_dn(group_dn(5), "cn=g005", new_superior=moved)  # g004 ⊃ g005 ⊃ g006
    try:
        after, report = source.read_with_report()
        fresh = LdapRosterSource(settings=source.settings).read()
    finally:
        with admin(directory) as connection:  # the other tests read ou=people and ou=groups
            assert connection.modify_dn(f"uid=u00300,{moved}", "uid=u00300", new_superior=PEOPLE)
            assert connection.modify_dn(f"cn=g005,{moved}", "cn=g005", new_superior=GROUPS)

    assert report.mode == "incremental"
    assert pairs(after) == pairs(before)
    assert managers(after) == managers(before)
    assert managers(after)["u00342"] == "u00300"
    assert pairs(fresh) == pairs(before)  # as a full read sees it


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


def test_a_lost_cache_makes_the_next_read_full(directory: Directory, tmp_path: Path) -> None:
    watermarks = MemoryWatermarkStore()
    source = LdapRosterSource(
        settings=settings(directory.url, group_base=None), cache_dir=tmp_path, watermarks=watermarks
    )
    source.read()
    for parquet in tmp_path.rglob("users.parquet"):
        parquet.unlink()

    roster, report = source.read_with_report()

    assert report.mode == "full"
    assert "cached roster is missing" in report.reason
    assert len(roster.users.frame) >= directory.users


def test_a_refused_bind_names_the_setting_and_not_the_password(directory: Directory) -> None:
    source = LdapRosterSource(settings=settings(directory.url, bind_password=SecretStr("wrong-password-123")))

    with pytest.raises(RosterError, match="SCIM_LDAP_BIND_DN") as caught:
        source.read()

    assert "wrong-password-123" not in str(caught.value)
    assert "wrong-password-123" not in repr(source) + repr(source.settings)


def test_plain_ldap_to_a_remote_host_is_refused_before_connecting() -> None:
    source = LdapRosterSource(settings=settings("ldap://ldap.example.org"))

    with pytest.raises(ConfigurationError, match="clear text"):
        source.read()


def test_starttls_refuses_an_untrusted_certificate(tls_directory: Directory) -> None:
    source = LdapRosterSource(settings=settings(tls_directory.url, start_tls=True))

    with pytest.raises(RosterError, match=r"cannot connect|StartTLS"):
        source.read()


def test_starttls_with_the_ca_bundle_reads_the_directory(tls_directory: Directory) -> None:
    source = LdapRosterSource(settings=settings(tls_directory.url, start_tls=True, ca_bundle=tls_directory.ca_bundle))

    assert len(source.read().users.frame) == tls_directory.users


def test_ldaps_verifies_the_certificate(tls_directory: Directory) -> None:
    assert tls_directory.ldaps_url is not None
    untrusted = LdapRosterSource(settings=settings(tls_directory.ldaps_url))
    trusted = LdapRosterSource(settings=settings(tls_directory.ldaps_url, ca_bundle=tls_directory.ca_bundle))

    with pytest.raises(RosterError, match="cannot connect"):
        untrusted.read()
    assert len(trusted.read().users.frame) == tls_directory.users


def test_settings_come_from_the_environment() -> None:
    env = {
        "SCIM_LDAP_URL": "ldaps://dc1.corp.example:636",
        "SCIM_LDAP_BIND_DN": "CN=svc,DC=corp",
        "SCIM_LDAP_BIND_PASSWORD": "pw-from-env",
        "SCIM_LDAP_USER_BASE": "OU=Staff,DC=corp",
        "SCIM_LDAP_FLAVOR": "ad",
        "SCIM_LDAP_ATTRIBUTES": "user_name=userPrincipalName, email=mail|proxyAddresses",
        "SCIM_LDAP_FULL_READ_EVERY": "12",
    }

    loaded = LdapSettings.from_env(env)

    assert loaded.attribute_map()["user_name"] == ("userPrincipalName",)
    assert loaded.attribute_map()["external_id"] == ("objectGUID",)
    assert loaded.full_read.every_cycles == 12
    assert loaded.filters()[1] == "(objectClass=group)"
    assert "pw-from-env" not in repr(loaded)


def test_a_bad_setting_names_the_variable_without_its_value() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_LDAP_URL") as caught:
        LdapSettings.from_env({"SCIM_LDAP_URL": "http://secret-host-value", "SCIM_LDAP_USER_BASE": SUFFIX})

    assert "secret-host-value" not in str(caught.value)


def test_memberships_can_come_from_the_memberof_overlay(directory: Directory) -> None:
    online = f"cn=online,{GROUPS}"
    members = [user_dn(i) for i in (1, 2, 3)]
    with admin(directory) as connection:
        assert connection.add(online, ["groupOfNames"], {"cn": "online", "member": members})
    try:
        source = LdapRosterSource(settings=settings(directory.url, membership="memberOf"))

        memberships = source.read().memberships
    finally:
        with admin(directory) as connection:
            assert connection.delete(online)

    assert memberships is not None
    pairs = set(zip(memberships.frame["group_name"], memberships.frame["user_name"], strict=True))
    assert {("online", "u00001"), ("online", "u00002"), ("online", "u00003")} <= pairs
    # Only memberships written through the server carry memberOf (the seed was loaded offline, without the overlay).
    assert ("g000", "u00001") not in pairs


@pytest.mark.slow
def test_a_sync_from_ldap_into_the_emulator_converges(tls_directory: Directory, tmp_path: Path) -> None:
    """The whole pipeline as a user runs it: `scim-pipeline sync` with SCIM_SOURCE=ldap over StartTLS."""
    import os
    import subprocess
    import sys

    from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorServer

    assert tls_directory.ca_bundle is not None
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
                "SCIM_LDAP_URL": tls_directory.url,
                "SCIM_LDAP_START_TLS": "true",
                "SCIM_LDAP_CA_BUNDLE": str(tls_directory.ca_bundle),
                "SCIM_LDAP_BIND_DN": ADMIN_DN,
                "SCIM_LDAP_BIND_PASSWORD": ADMIN_PASSWORD,
                "SCIM_LDAP_USER_BASE": PEOPLE,
                "SCIM_LDAP_GROUP_BASE": GROUPS,
                "SCIM_LDAP_CLOCK_SKEW_S": "0",
                "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
            }
        )

        def sync() -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "scim_pipeline.cli", "sync"]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)

        first = sync()
        assert first.returncode == 0, first.stdout + first.stderr
        assert ADMIN_PASSWORD not in first.stdout + first.stderr
        server.emulator.clear_requests()
        second = sync()  # managers are set in the first cycle too (manager waves): nothing left to write
        assert second.returncode == 0, second.stdout + second.stderr
        writes = [r for r in server.emulator.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]
        assert [r for r in writes if r.resource_type != "token"] == []  # every cycle obtains its token first
        assert server.emulator.store.count("Users") == tls_directory.users
        assert server.emulator.store.count("Groups") == tls_directory.groups
