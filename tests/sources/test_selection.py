"""Choosing the roster source from SCIM_SOURCE and each source's own variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from scim_pipeline.sample_roster import SAMPLE_ROSTER
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources import (
    FolderRosterSource,
    MemoryWatermarkStore,
    ReportingSource,
    RosterSource,
    source_from_env,
)
from scim_pipeline.sources.entra import EntraRosterSource
from scim_pipeline.sources.ldap import LdapRosterSource
from scim_pipeline.sources.okta import OktaRosterSource
from scim_pipeline.sources.scim_source import ScimRosterSource
from scim_pipeline.sources.sql import SqlRosterSource

ENVIRONMENTS = {
    "ldap": (
        {
            "SCIM_LDAP_URL": "ldaps://dc.example",
            "SCIM_LDAP_USER_BASE": "ou=people,dc=example",
            "SCIM_LDAP_BIND_PASSWORD": "pw-ldap",
        },
        LdapRosterSource,
    ),
    "entra": (
        {"SCIM_ENTRA_TENANT_ID": "t", "SCIM_ENTRA_CLIENT_ID": "c", "SCIM_ENTRA_CLIENT_SECRET": "pw-entra"},
        EntraRosterSource,
    ),
    "okta": ({"SCIM_OKTA_URL": "https://example.okta.com", "SCIM_OKTA_TOKEN": "pw-okta"}, OktaRosterSource),
    "scim": ({"SCIM_SOURCE_SCIM_URL": "https://idp.example/scim/v2"}, ScimRosterSource),
    "sql": ({"SCIM_SQL_URL": "sqlite://", "SCIM_SQL_USERS_TABLE": "staff"}, SqlRosterSource),
}


@pytest.mark.parametrize("kind", sorted(ENVIRONMENTS))
def test_each_kind_builds_its_source_from_its_variables(kind: str, tmp_path: Path) -> None:
    variables, expected = ENVIRONMENTS[kind]

    source = source_from_env({"SCIM_SOURCE": kind, **variables}, cache_dir=tmp_path, watermarks=MemoryWatermarkStore())

    assert isinstance(source, expected)
    assert isinstance(source, RosterSource)
    assert isinstance(source, ReportingSource)
    assert not any(value.startswith("pw-") and value in repr(source) for value in variables.values())


def test_the_default_is_the_file_source_with_the_sample_roster(tmp_path: Path) -> None:
    source = source_from_env({}, cache_dir=tmp_path, watermarks=None)

    assert isinstance(source, FolderRosterSource)
    assert source.folder == SAMPLE_ROSTER
    roster, report = source.read_with_report()
    assert report.rows["users"] == len(roster.users.frame) == 60
    assert report.source == "file"


def test_scim_roster_names_the_folder(tmp_path: Path) -> None:
    source = source_from_env({"SCIM_SOURCE": "file", "SCIM_ROSTER": str(tmp_path)}, cache_dir=tmp_path, watermarks=None)

    assert isinstance(source, FolderRosterSource)
    assert source.folder == tmp_path


def test_a_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_ROSTER"):
        source_from_env({"SCIM_ROSTER": str(tmp_path / "nowhere")}, cache_dir=tmp_path, watermarks=None)


def test_an_unknown_kind_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ldap, entra, okta, scim, sql"):
        source_from_env({"SCIM_SOURCE": "workday"}, cache_dir=tmp_path, watermarks=None)


def test_a_missing_required_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_LDAP_URL") as caught:
        source_from_env(
            {"SCIM_SOURCE": "ldap", "SCIM_LDAP_USER_BASE": "dc=x", "SCIM_LDAP_BIND_PASSWORD": "pw-hidden"},
            cache_dir=tmp_path,
            watermarks=None,
        )

    assert "pw-hidden" not in str(caught.value)
