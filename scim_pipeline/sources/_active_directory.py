"""What Active Directory adds to LDAP, as the LDAP source needs it: extended DNs, SIDs, built-in objects, filters.

- The extended-DN control (1.2.840.113556.1.4.529, string format) makes the DC send every DN — an entry's own and
  every DN-valued attribute (`member`, `manager`, `memberOf`) — as `<GUID=…>;<SID=…>;CN=…`: references are then
  resolved by objectGUID, which a move to another OU does not change.
- A user's primary group is not in that group's `member`: it is the group whose objectSid is the domain SID (the
  user's own objectSid less its last part) followed by the user's `primaryGroupID` (513 = Domain Users).
- Built-in objects: `isCriticalSystemObject=TRUE`, the `CN=Builtin` container (SIDs `S-1-5-32-…`) and the
  well-known relative ids below 1000 (Administrator 500, krbtgt 502, Domain Users 513, Domain Admins 512, …).
"""

from __future__ import annotations

import re
import struct
from typing import Final

__all__ = [
    "BUILTIN_RID_LIMIT",
    "domain_sid_of",
    "is_builtin_sid",
    "parse_extended_dn",
    "sid_text",
    "user_filter_exclusions",
]

#: Relative ids below this are the domain's well-known accounts and groups.
BUILTIN_RID_LIMIT: Final = 1000
_BUILTIN_DOMAIN: Final = "S-1-5-32-"  # the SIDs of the groups in CN=Builtin
_EXTENDED: Final = re.compile(r"^<GUID=([0-9A-Fa-f-]+)>;(?:<SID=([^>]*)>;)?(.*)$", re.DOTALL)
_MANAGED_SERVICE_ACCOUNTS: Final = ("msDS-ManagedServiceAccount", "msDS-GroupManagedServiceAccount")


def parse_extended_dn(value: str) -> tuple[str | None, str | None, str]:
    """`(guid, sid, dn)` of an extended DN (`<GUID=…>;<SID=…>;dn`), the GUID in lower case; a plain DN gives
    `(None, None, dn)`."""
    found = _EXTENDED.match(value)
    if found is None:
        return None, None, value
    guid, sid, dn = found.groups()
    return guid.lower(), sid or None, dn


def sid_text(raw: bytes) -> str | None:
    """A binary objectSid as `S-1-5-21-…` (None when it is not a SID)."""
    if len(raw) < 8 or raw[0] != 1 or len(raw) != 8 + 4 * raw[1]:
        return None
    authority = int.from_bytes(raw[2:8], "big")
    parts = struct.unpack(f"<{raw[1]}I", raw[8:])
    return "-".join(["S", "1", str(authority), *map(str, parts)])


def domain_sid_of(sid: str) -> str:
    """The domain part of an account's SID (everything before the relative id)."""
    return sid.rpartition("-")[0]


def is_builtin_sid(sid: str | None) -> bool:
    """True for a built-in group (`S-1-5-32-…`) and a well-known account or group (relative id below 1000)."""
    if sid is None:
        return False
    if sid.startswith(_BUILTIN_DOMAIN):
        return True
    rid = sid.rpartition("-")[2]
    return rid.isdigit() and int(rid) < BUILTIN_RID_LIMIT


def user_filter_exclusions(*, builtin: bool, computers: bool, service_accounts: bool) -> str:
    """The filter terms that leave out what AD admins do not provision as people (each `True` keeps that kind).

    Computer accounts and (group) managed service accounts are `user` objects too; managed service accounts are
    also `computer` objects, so leaving computers out leaves them out unless they are asked for.
    """
    terms = []
    if not builtin:
        terms.append("(!(isCriticalSystemObject=TRUE))")
    service = "".join(f"(objectClass={name})" for name in _MANAGED_SERVICE_ACCOUNTS)
    if not computers and not service_accounts:
        terms.append("(!(objectClass=computer))")
    elif not computers:
        terms.append(f"(|(!(objectClass=computer))(|{service}))")
    elif not service_accounts:
        terms.append(f"(!(|{service}))")
    return "".join(terms)
