"""Active Directory's extended DNs, SIDs, built-in objects and exclusion filters (the real DC is in test_ldap_ad)."""

from __future__ import annotations

import struct

from scim_pipeline.sources._active_directory import (
    domain_sid_of,
    is_builtin_sid,
    parse_extended_dn,
    sid_text,
    user_filter_exclusions,
)


def test_an_extended_dn_gives_the_guid_the_sid_and_the_dn() -> None:
    value = "<GUID=B4E0D9BC-64F7-4446-A69A-CFFFBD95343F>;<SID=S-1-5-21-1-2-3-1123>;CN=u0021,OU=Staff,DC=corp"

    assert parse_extended_dn(value) == (
        "b4e0d9bc-64f7-4446-a69a-cfffbd95343f",
        "S-1-5-21-1-2-3-1123",
        "CN=u0021,OU=Staff,DC=corp",
    )
    assert parse_extended_dn("<GUID=0a>;CN=x,DC=corp") == ("0a", None, "CN=x,DC=corp")  # no SID: not a principal
    assert parse_extended_dn("cn=plain,dc=org") == (None, None, "cn=plain,dc=org")


def test_a_binary_sid_reads_as_text() -> None:
    raw = bytes([1, 5]) + (5).to_bytes(6, "big") + struct.pack("<5I", 21, 11, 22, 33, 1105)

    assert sid_text(raw) == "S-1-5-21-11-22-33-1105"
    assert domain_sid_of("S-1-5-21-11-22-33-1105") == "S-1-5-21-11-22-33"
    assert sid_text(b"\x01\x05short") is None


def test_built_in_sids_are_the_builtin_domain_and_the_well_known_relative_ids() -> None:
    assert is_builtin_sid("S-1-5-32-544")  # Administrators (CN=Builtin)
    assert is_builtin_sid("S-1-5-21-11-22-33-513")  # Domain Users
    assert is_builtin_sid("S-1-5-21-11-22-33-500")  # Administrator
    assert not is_builtin_sid("S-1-5-21-11-22-33-1105")
    assert not is_builtin_sid(None)


def test_each_exclusion_has_its_setting() -> None:
    everything_out = user_filter_exclusions(builtin=False, computers=False, service_accounts=False)
    assert everything_out == "(!(isCriticalSystemObject=TRUE))(!(objectClass=computer))"
    assert user_filter_exclusions(builtin=True, computers=True, service_accounts=True) == ""
    managed = "(objectClass=msDS-ManagedServiceAccount)(objectClass=msDS-GroupManagedServiceAccount)"
    computers_only = user_filter_exclusions(builtin=True, computers=True, service_accounts=False)
    assert computers_only == f"(!(|{managed}))"
    service_only = user_filter_exclusions(builtin=True, computers=False, service_accounts=True)
    assert service_only == f"(|(!(objectClass=computer))(|{managed}))"
