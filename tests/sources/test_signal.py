"""The sources' cheap change signals (what the leaver sensor polls): they move on a change, a disable and a
removal, stay put otherwise, and say what they cost. Folder on disk, SQL on SQLite, LDAP on a real slapd."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import MODIFY_REPLACE, Connection
from pydantic import SecretStr

from scim_pipeline.sources import FolderRosterSource, RosterError
from scim_pipeline.sources._signal import ChangeSignalUnsupportedError, change_signal
from scim_pipeline.sources.ldap import LdapRosterSource, LdapSettings
from scim_pipeline.sources.okta import OktaRosterSource, OktaSettings
from scim_pipeline.sources.sql import SqlRosterSource, SqlSettings
from tests.sources.conftest import ADMIN_DN, ADMIN_PASSWORD, GROUPS, PEOPLE, Directory, running_slapd, user_dn

USERS_CSV = "user_name,active\nann@example.com,true\nbob@example.com,true\n"


@pytest.fixture
def roster_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "roster"
    folder.mkdir()
    (folder / "users.csv").write_text(USERS_CSV)
    (folder / "groups.csv").write_text("group_name\nAuditors\n")
    return folder


def _touch_forward(path: Path) -> None:
    # Some file systems keep coarse times: move the modification time on by a second, as a later edit would.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_folder_signal_is_stable_until_a_roster_file_changes(roster_folder: Path) -> None:
    source = FolderRosterSource(roster_folder)
    first = source.change_signal()

    assert source.change_signal() == first
    assert first.requests == 0
    assert "2 roster files" in first.probe

    users = roster_folder / "users.csv"
    users.write_text(USERS_CSV.replace("bob@example.com,true", "bob@example.com,false"))  # same size
    _touch_forward(users)
    disabled = source.change_signal()
    assert disabled.value != first.value

    users.write_text("user_name,active\nann@example.com,true\n")  # Bob removed
    removed = source.change_signal()
    assert removed.value not in (first.value, disabled.value)

    (roster_folder / "memberships.csv").write_text("group_name,user_name\nAuditors,ann@example.com\n")
    assert source.change_signal().value != removed.value


def test_folder_signal_moves_on_an_atomic_replace_with_the_old_time(roster_folder: Path) -> None:
    source = FolderRosterSource(roster_folder)
    users = roster_folder / "users.csv"
    before = source.change_signal()
    stat = users.stat()
    replacement = roster_folder / ".users.csv.tmp"
    replacement.write_text(USERS_CSV)  # same bytes, same size
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same time (cp -p, rsync -t)
    os.replace(replacement, users)

    assert source.change_signal().value != before.value  # a new inode


def test_folder_signal_of_a_folder_without_users_names_it(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="has no users table"):
        FolderRosterSource(tmp_path).change_signal()
    with pytest.raises(RosterError, match="does not exist"):
        FolderRosterSource(tmp_path / "missing").change_signal()


@pytest.fixture
def hr_database(tmp_path: Path) -> Path:
    path = tmp_path / "hr.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE staff (login TEXT, enabled TEXT, updated_at TEXT);
            INSERT INTO staff VALUES ('ann', 'true', '2025-01-01T10:00'), ('bob', 'true', '2025-01-01T10:00');
            """
        )
    return path


def _sql(path: Path, **values: str) -> SqlRosterSource:
    return SqlRosterSource(SqlSettings(url=SecretStr(f"sqlite:///{path}"), users_table="staff", **values))


def _execute(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(statement)


def test_sql_change_query_is_the_signal(hr_database: Path) -> None:
    source = _sql(hr_database, change_query="SELECT max(updated_at), count(*) FROM staff")
    first = source.change_signal()
    assert source.change_signal() == first
    assert first.requests == 1
    assert first.probe.startswith("SCIM_SQL_CHANGE_QUERY on sqlite:///")

    _execute(hr_database, "UPDATE staff SET enabled = 'false', updated_at = '2025-01-02T09:00' WHERE login = 'bob'")
    disabled = source.change_signal()
    assert disabled.value != first.value

    _execute(hr_database, "DELETE FROM staff WHERE login = 'bob'")
    assert source.change_signal().value != disabled.value


def test_sql_without_a_change_query_digests_the_tables(hr_database: Path) -> None:
    source = _sql(hr_database)
    first = source.change_signal()
    assert "full read of 1 roster tables" in first.probe

    _execute(hr_database, "UPDATE staff SET enabled = 'false' WHERE login = 'bob'")  # no timestamp moved
    assert source.change_signal().value != first.value


def test_sql_signal_error_names_the_query_never_the_password(tmp_path: Path) -> None:
    path = tmp_path / "hr.sqlite"
    sqlite3.connect(path).close()
    source = _sql(path, change_query="SELECT max(updated_at) FROM nowhere")
    with pytest.raises(RosterError, match=r"polling SCIM_SQL_CHANGE_QUERY on sqlite:///.*failed"):
        source.change_signal()


def test_okta_has_no_change_signal_and_says_so() -> None:
    source = OktaRosterSource(settings=OktaSettings.model_validate({"url": "https://acme.okta.com", "token": "x"}))
    with pytest.raises(ChangeSignalUnsupportedError, match="the okta source has no cheap change signal"):
        change_signal(source)


def _ldap(directory: Directory) -> LdapRosterSource:
    settings = LdapSettings.model_validate(
        {
            "url": directory.url,
            "bind_dn": ADMIN_DN,
            "bind_password": SecretStr(ADMIN_PASSWORD),
            "user_base": PEOPLE,
            "group_base": GROUPS,
            "attributes": {"active": ("description",)},
        }
    )
    return LdapRosterSource(settings=settings)


@pytest.fixture(params=[False, True], ids=["listing", "contextCSN"])
def small_directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Directory, bool]]:
    """A slapd of its own (the session's directory is shared by other tests), with or without syncprov."""
    with running_slapd(tmp_path / "slapd", users=20, groups=2, syncprov=request.param) as server:
        yield server, request.param


def test_ldap_signal_moves_on_a_disable_and_a_removal(small_directory: tuple[Directory, bool]) -> None:
    directory, syncprov = small_directory
    source = _ldap(directory)
    first = source.change_signal()
    assert source.change_signal() == first
    if syncprov:
        assert first.probe.startswith("contextCSN of 'dc=example,dc=org' on ldap://127.0.0.1:")
        assert first.requests == 2  # the root DSE and the suffix entry
    else:
        assert first.probe.startswith("modifyTimestamp of 22 entries on ldap://127.0.0.1:")  # 20 users, 2 groups
        assert first.requests == 4  # the root DSE, the suffix entry, one page under each base

    admin = Connection(directory.url, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    try:
        # modifyTimestamp has a one-second resolution: the listing would miss an edit in the seeding's second.
        assert admin.modify(user_dn(7), {"description": [(MODIFY_REPLACE, ["FALSE"])]}), admin.result
        disabled = source.change_signal()
        assert disabled.value != first.value
        assert source.change_signal() == disabled

        assert admin.delete(user_dn(19)), admin.result  # in no group: only the listing or contextCSN notices
        assert source.change_signal().value != disabled.value
    finally:
        admin.unbind()
