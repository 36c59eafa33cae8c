"""LDAP and Active Directory as a roster source (ldap3).

Users and groups are read with simple paged results (RFC 2696) under their base DNs; memberships come from the
groups' `member` / `uniqueMember` values (or the users' `memberOf`), nested groups flattened, loops tolerated. TLS
(LDAPS or StartTLS) always verifies the server certificate; a plain `ldap://` connection without StartTLS is only
accepted on a loopback address, since the bind password would cross the network in clear text.

Entries are known by their identity — `entryUUID` on OpenLDAP, `objectGUID` on Active Directory — never by their DN,
so renaming an entry or moving it to another OU changes nothing downstream. On AD every DN the DC sends carries the
GUID of the entry it names (the extended-DN control); on OpenLDAP a DN in `member` or `manager` is turned into the
entryUUID of the entry it names, from this read or the cached one.

Active Directory specifics (`flavor="ad"`): a user's primary group (`primaryGroupID`, Domain Users for most) counts
as a membership; built-in accounts and groups (`isCriticalSystemObject`, `CN=Builtin`, relative ids below 1000),
computer accounts and managed service accounts are left out unless asked for (built-in groups are still read: their
members reach the groups they are nested in); large `member` values are read by range retrieval.

Incremental reads ask only for entries changed since the watermark: `modifyTimestamp` on OpenLDAP (the watermark is
the read's start time less the allowed clock skew, so a change made while a read runs is read again next time), the
domain controller's `highestCommittedUSN` / `uSNChanged` on Active Directory (bind to the same DC every time: USNs
are per DC). Deletions are found by every incremental read (`find_deletions`): on AD the tombstones changed since the
watermark (the show-deleted control) and entries moved out of the bases, on OpenLDAP a listing of the entryUUIDs
under the bases compared with the cache.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final, Literal, Self
from urllib.parse import urlsplit

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.microsoft import extended_dn_control, show_deleted_control
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.settings import is_loopback_host
from scim_pipeline.sources._active_directory import (
    domain_sid_of,
    is_builtin_sid,
    parse_extended_dn,
    sid_text,
    user_filter_exclusions,
)
from scim_pipeline.sources._incremental import (
    HIDDEN,
    MANAGER_REF,
    NAME,
    PRIMARY_GROUP_REF,
    REF,
    USER_COLUMNS,
    Counters,
    Delta,
    FullReadPolicy,
    Snapshot,
    SnapshotSource,
    StaleWatermarkError,
)
from scim_pipeline.sources._raw import RosterError
from scim_pipeline.sources._settings import env_settings
from scim_pipeline.sources._signal import ChangeSignal, digest

__all__ = ["LDAP_ATTRIBUTE_DEFAULTS", "LdapRosterSource", "LdapSettings"]

_PAGED_RESULTS: Final = "1.2.840.113556.1.4.319"
_ACCOUNT_DISABLED: Final = 0x2  # userAccountControl ACCOUNTDISABLE
_STRONGER_AUTH_REQUIRED: Final = 8
_DN_SPACING: Final = re.compile(r"\s*([,=+])\s*")
_UNDER_BUILTIN: Final = re.compile(r"(^|,)cn=builtin,dc=")

#: Which LDAP attributes fill each roster column, tried in order (the first with a value wins).
LDAP_ATTRIBUTE_DEFAULTS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "openldap": {
        "user_name": ("uid",),
        "external_id": ("entryUUID",),
        "given_name": ("givenName",),
        "family_name": ("sn",),
        "display_name": ("displayName", "cn"),
        "email": ("mail",),
        "department": ("departmentNumber", "ou"),
        "title": ("title",),
        "employee_number": ("employeeNumber",),
        "manager": ("manager",),
        "group_name": ("cn",),
        "group_external_id": ("entryUUID",),
    },
    "ad": {
        "user_name": ("sAMAccountName", "userPrincipalName"),
        "external_id": ("objectGUID",),
        "given_name": ("givenName",),
        "family_name": ("sn",),
        "display_name": ("displayName", "cn"),
        "email": ("mail", "userPrincipalName"),
        "department": ("department",),
        "title": ("title",),
        "employee_number": ("employeeNumber", "employeeID"),
        "manager": ("manager",),
        "group_name": ("cn",),
        "group_external_id": ("objectGUID",),
    },
}
_DEFAULT_FILTERS: Final = {
    "openldap": ("(objectClass=inetOrgPerson)", "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"),
    # Computers and managed service accounts are `user` objects too: the exclusions leave them out (settings).
    "ad": ("(objectClass=user)", "(objectClass=group)"),
}
_IDENTITY: Final = {"openldap": "entryUUID", "ad": "objectGUID"}
_BINARY_GUIDS: Final = frozenset({"objectguid"})


class LdapSettings(BaseModel):
    """Where and how to read an LDAP directory or Active Directory (`SCIM_LDAP_*`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="ldaps://host:636 or ldap://host:389 (then StartTLS, or a loopback host).")
    bind_dn: str | None = Field(None, description="The DN to bind as; unset binds anonymously.")
    bind_password: SecretStr | None = Field(None, description="The bind password (never logged).")
    user_base: str = Field(description="The base DN searched for users (subtree).")
    group_base: str | None = Field(None, description="The base DN searched for groups; unset reads no groups.")
    user_filter: str | None = Field(None, description="LDAP filter for users; default by flavor.")
    group_filter: str | None = Field(None, description="LDAP filter for groups; default by flavor.")
    flavor: Literal["openldap", "ad"] = Field("openldap", description="Attribute and incremental defaults.")
    membership: Literal["member", "memberOf"] = Field(
        "member",
        description="Read memberships from the groups' member/uniqueMember (default) or the users' memberOf "
        "(on AD, memberOf changes do not touch the user's uSNChanged: incremental reads need `member`).",
    )
    attributes: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Roster column -> LDAP attributes tried in order, over the flavor's defaults "
        "(e.g. user_name: [userPrincipalName]; group_name / group_external_id for groups; active for an "
        "attribute holding TRUE/FALSE on OpenLDAP).",
    )
    ca_bundle: Path | None = Field(None, description="PEM file of the CAs trusted for LDAPS / StartTLS.")
    start_tls: bool = Field(False, description="Upgrade ldap:// with StartTLS (verified).")
    page_size: int = Field(500, ge=1, le=100_000, description="Simple paged results page size.")
    timeout_s: float = Field(30.0, gt=0, description="Connect and receive timeout per request.")
    clock_skew_s: float = Field(
        10.0, ge=0, description="OpenLDAP incremental reads: how far the server clock may be behind this one."
    )
    find_deletions: bool = Field(
        True,
        description="Find deleted entries in every incremental read: on AD the tombstones changed since the "
        "watermark (the bind account must be allowed to read CN=Deleted Objects) and entries moved out of the "
        "bases; on OpenLDAP a listing of every entryUUID under the bases (one attribute per entry), compared with "
        "the cache. Off: deletions wait for the periodic full read.",
    )
    include_builtin_users: bool = Field(
        False,
        description="AD: also read built-in accounts (isCriticalSystemObject=TRUE, relative id below 1000: "
        "Administrator, Guest, krbtgt, the DC's service accounts).",
    )
    include_builtin_groups: bool = Field(
        False,
        description="AD: also hand on built-in groups (isCriticalSystemObject=TRUE, CN=Builtin, relative id below "
        "1000: Domain Users, Domain Admins, Administrators, …). Left out, they are still read, so their members "
        "reach the groups they are nested in.",
    )
    include_computers: bool = Field(False, description="AD: also read computer accounts (objectClass=computer).")
    include_service_accounts: bool = Field(
        False,
        description="AD: also read managed service accounts (msDS-ManagedServiceAccount, "
        "msDS-GroupManagedServiceAccount).",
    )
    range_size: int = Field(
        1500,
        ge=1,
        le=1_000_000,
        description="AD: group members asked for per request (range retrieval, member;range=0-1499, …); a DC "
        "whose MaxValRange is lower answers with smaller ranges and the rest is asked for in turn.",
    )
    full_read: FullReadPolicy = Field(default_factory=FullReadPolicy)

    @field_validator("url")
    @classmethod
    def _url_is_ldap(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError("must be ldap://host[:port] or ldaps://host[:port]")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """From `SCIM_LDAP_*` (`SCIM_LDAP_ATTRIBUTES` as `column=attr1|attr2,column=attr`; `SCIM_LDAP_FULL_READ_EVERY`
        and `SCIM_LDAP_FULL_READ_MAX_AGE_HOURS` for the full-read policy). Raises `ConfigurationError`."""
        return env_settings(cls, env, prefix="SCIM_LDAP_", lists={"attributes"})

    def attribute_map(self) -> dict[str, tuple[str, ...]]:
        return {**LDAP_ATTRIBUTE_DEFAULTS[self.flavor], **self.attributes}

    def filters(self) -> tuple[str, str]:
        """The user and group filters, with AD's exclusions (built-in accounts, computers, service accounts)."""
        users, groups = _DEFAULT_FILTERS[self.flavor]
        user_filter, group_filter = self.user_filter or users, self.group_filter or groups
        if self.flavor == "ad":
            exclusions = user_filter_exclusions(
                builtin=self.include_builtin_users,
                computers=self.include_computers,
                service_accounts=self.include_service_accounts,
            )
            if exclusions:
                user_filter = f"(&{_parenthesized(user_filter)}{exclusions})"
        return user_filter, group_filter


class _VerifiedTls(Tls):
    """ldap3's Tls with the standard library doing the whole verification, host name included.

    ldap3 2.9 turns the context's host name check off and calls `ssl.match_hostname` itself, which is deprecated
    and gone in Python 3.12; a default context with `server_hostname` checks the same (IP addresses too).
    """

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_certs_file)
        connection.socket = context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake, server_hostname=self.sni
        )


def normalize_dn(dn: str) -> str:
    """A DN as compared here: case and the spaces around separators do not matter."""
    if " " not in dn:
        return dn.lower()
    return _DN_SPACING.sub(r"\1", dn.strip()).lower()


def _generalized_time(epoch_s: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(epoch_s))


def _parenthesized(search_filter: str) -> str:
    stripped = search_filter.strip()
    return stripped if stripped.startswith("(") else f"({stripped})"


def _under(dn: str, base: str) -> bool:
    """Whether the normalized `dn` is `base` or below it."""
    return dn == base or dn.endswith(f",{base}")


@dataclass
class _Entry:
    """One entry as searched: its identity, its (normalized, plain) DN and its attributes by lower-case name."""

    ref: str
    dn: str
    values: dict[str, list[bytes]]
    sid: str | None = None


@dataclass
class _Found:
    """What one read found before references are resolved."""

    users: list[_Entry] = field(default_factory=list)
    groups: list[_Entry] = field(default_factory=list)
    #: Entries changed since the watermark that are no longer under their base (moved out): gone from the roster.
    moved_out: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    #: Current DN -> identity of every entry under the bases (the OpenLDAP deletion check lists them all).
    listed_names: dict[str, str] = field(default_factory=dict)
    primary_groups: dict[str, str | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class LdapRosterSource(SnapshotSource):
    """Reads users, groups and memberships from LDAP / AD (see the module docstring)."""

    kind: ClassVar[str] = "ldap"
    settings: LdapSettings

    def __repr__(self) -> str:
        return f"LdapRosterSource({self.server!r})"

    @property
    def full_read(self) -> FullReadPolicy:
        return self.settings.full_read

    @property
    def server(self) -> str:
        parts = urlsplit(self.settings.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    @property
    def _ad(self) -> bool:
        return self.settings.flavor == "ad"

    # -- connection ------------------------------------------------------------------------------------------------

    def _connect(self) -> Connection:
        settings = self.settings
        parts = urlsplit(settings.url)
        host = parts.hostname or ""
        secure = parts.scheme == "ldaps" or settings.start_tls
        if not secure and not is_loopback_host(host):
            raise ConfigurationError(
                f"SCIM_LDAP_URL {self.server} is plain ldap:// without SCIM_LDAP_START_TLS: the bind password would "
                "cross the network in clear text; use ldaps:// or StartTLS (plain ldap:// is allowed on loopback only)"
            )
        tls = _VerifiedTls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(settings.ca_bundle) if settings.ca_bundle else None,
            sni=host,
        )
        server = Server(
            host,
            port=parts.port or (636 if parts.scheme == "ldaps" else 389),
            use_ssl=parts.scheme == "ldaps",
            tls=tls,
            get_info=NONE,
            connect_timeout=settings.timeout_s,
        )
        password = settings.bind_password.get_secret_value() if settings.bind_password else None
        connection = Connection(
            server,
            user=settings.bind_dn,
            password=password,
            auto_bind=False,
            raise_exceptions=False,
            receive_timeout=max(1, round(settings.timeout_s)),  # ldap3 packs it as an int
            read_only=True,
            auto_referrals=False,  # a referral would replay the bind (and its password) to another server
            # Range retrieval is done here, with the extended-DN control on every request and every request counted;
            # ldap3's own would ask for the rest without the control (plain DNs) and unseen.
            auto_range=False,
            return_empty_attributes=False,
        )
        try:
            connection.open()
            if settings.start_tls and parts.scheme == "ldap" and not connection.start_tls():
                raise RosterError(f"LDAP server {self.server} refused StartTLS ({_result_text(connection)})")
            if not connection.bind():
                if (connection.result or {}).get("result") == _STRONGER_AUTH_REQUIRED:
                    raise RosterError(
                        f"LDAP server {self.server} requires a protected connection for this bind "
                        f"({_result_text(connection)}): use TLS — an ldaps:// SCIM_LDAP_URL (port 636) or "
                        "SCIM_LDAP_START_TLS=true — with SCIM_LDAP_CA_BUNDLE naming the CA of the server's certificate"
                    )
                raise RosterError(
                    f"LDAP server {self.server} refused the bind as SCIM_LDAP_BIND_DN {settings.bind_dn!r} "
                    f"({_result_text(connection)}); check SCIM_LDAP_BIND_DN and SCIM_LDAP_BIND_PASSWORD"
                )
        except LDAPException as exc:
            _close(connection)
            raise RosterError(f"cannot connect to LDAP server {self.server}: {_exception_text(exc)}") from None
        except RosterError:
            _close(connection)
            raise
        return connection

    def _controls(self) -> list[tuple[str, bool, bytes | None]]:
        # On AD every DN comes with the GUID of the entry it names (`<GUID=…>;<SID=…>;dn`).
        return [extended_dn_control(criticality=True)] if self._ad else []

    def _search(
        self,
        connection: Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        counters: Counters,
        *,
        controls: Iterable[tuple[str, bool, bytes | None]] = (),
        listing: bool = False,
    ) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Every entry under `base` matching the filter, page by page (simple paged results); a `listing` (identity
        only) is counted apart from the entries fetched."""
        cookie: bytes | None = None
        while True:
            try:
                connection.search(
                    base,
                    search_filter,
                    search_scope=SUBTREE,
                    attributes=attributes,
                    paged_size=self.settings.page_size,
                    paged_cookie=cookie,
                    controls=[*self._controls(), *controls] or None,
                )
            except LDAPException as exc:
                raise RosterError(
                    f"LDAP search under {base!r} on {self.server} failed: {_exception_text(exc)}"
                ) from None
            counters.requests += 1
            counters.pages += 1
            result = connection.result
            if result.get("result") not in (0, 4):  # 4 = sizeLimitExceeded is still an error for a roster
                raise RosterError(
                    f"LDAP search under {base!r} with filter {search_filter!r} on {self.server} failed "
                    f"({_result_text(connection)})"
                )
            if result.get("result") == 4:
                raise RosterError(
                    f"LDAP server {self.server} stopped the search under {base!r} at its size limit; the bind DN "
                    "needs an unlimited size limit for paged searches (olcLimits / MaxPageSize)"
                )
            for entry in connection.response or ():
                if entry.get("type") == "searchResEntry":
                    if listing:
                        counters.listed += 1
                    else:
                        counters.entries += 1
                    raw = entry.get("raw_attributes", {})
                    yield entry["dn"], {name.lower(): list(found) for name, found in raw.items()}
            control = result.get("controls", {}).get(_PAGED_RESULTS, {})
            cookie = control.get("value", {}).get("cookie") or None
            if not cookie:
                return

    def _base_entry(
        self, connection: Connection, dn: str, attributes: list[str], counters: Counters
    ) -> dict[str, list[bytes]] | None:
        """Attributes of one entry (a base search), keyed by lower-cased names; None when there is no such entry."""
        try:
            connection.search(
                dn, "(objectClass=*)", search_scope=BASE, attributes=attributes, controls=self._controls() or None
            )
        except LDAPException as exc:
            raise RosterError(f"LDAP read of {dn!r} on {self.server} failed: {_exception_text(exc)}") from None
        counters.requests += 1
        for entry in connection.response or ():
            if entry.get("type") == "searchResEntry":
                counters.entries += 1
                return {name.lower(): list(found) for name, found in entry.get("raw_attributes", {}).items()}
        return None

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        found, watermark = self._read(None, None, counters)
        users, groups, edges = self._rows(found, {})
        return Snapshot.build(users, groups, edges), watermark

    def _read_changes_from(self, watermark: str, counters: Counters, cached: Snapshot) -> tuple[Delta, str]:
        found, after = self._read(watermark, cached, counters)
        names = _cached_names(cached)
        users, groups, edges = self._rows(found, names)
        by_member = self.settings.membership == "memberOf"
        return Delta(
            users=users,
            groups=groups,
            edges=edges,
            edges_replaced_for=() if by_member else {str(group[REF]) for group in groups},
            member_edges_replaced_for={str(user[REF]) for user in users} if by_member else (),
            removed_refs=found.moved_out | found.removed,
        ), after

    def _read(self, since: str | None, cached: Snapshot | None, counters: Counters) -> tuple[_Found, str]:
        """The entries (all, or those changed since the watermark `since`) and, incrementally, what left."""
        settings = self.settings
        changed = self._changed_filter(since) if since is not None else ""
        connection = self._connect()
        try:
            watermark, naming_context = self._root(connection, counters)
            user_filter, group_filter = settings.filters()
            found = _Found()
            found.users = self._entries(
                connection,
                settings.user_base,
                user_filter,
                changed,
                self._user_attributes(),
                naming_context,
                found.moved_out,
                counters,
            )
            if settings.group_base:
                found.groups = self._entries(
                    connection, settings.group_base, group_filter, changed, self._group_attributes(),
                    naming_context, found.moved_out, counters,
                )  # fmt: skip
            self._complete_ranges(connection, [*found.users, *found.groups], counters)
            if self._ad:
                found.users = [user for user in found.users if settings.include_builtin_users or not _builtin(user)]
                found.primary_groups = self._primary_groups(connection, found, counters)
            if cached is not None and settings.find_deletions:
                if self._ad:
                    found.removed = self._tombstones(connection, naming_context, changed, counters)
                else:
                    found.removed = self._unlisted(connection, cached, found, counters)
        finally:
            _close(connection)
        return found, watermark

    def _user_attributes(self) -> list[str]:
        settings = self.settings
        attribute_map = settings.attribute_map()
        wanted = {a for column in USER_COLUMNS for a in attribute_map.get(column, ())} | {_IDENTITY[settings.flavor]}
        wanted |= set(attribute_map.get("active", ()))
        if self._ad:
            wanted |= {"userAccountControl", "objectSid", "primaryGroupID"}
        if settings.membership == "memberOf":
            wanted.add("memberOf")
        return sorted(wanted)

    def _group_attributes(self) -> list[str]:
        settings = self.settings
        attribute_map = settings.attribute_map()
        wanted = {*attribute_map["group_name"], *attribute_map["group_external_id"], _IDENTITY[settings.flavor]}
        if self._ad:
            wanted |= {"objectSid", "isCriticalSystemObject"}
            if settings.membership == "member":
                # Asked for by range: a DC answers member;range=0-1499 (or less, its MaxValRange) and the rest
                # is asked for in turn; a group that fits comes back as member;range=0-*.
                wanted.add(f"member;range=0-{settings.range_size - 1}")
        elif settings.membership == "member":
            wanted |= {"member", "uniqueMember"}
        return sorted(wanted)

    def _entries(
        self,
        connection: Connection,
        base: str,
        search_filter: str,
        changed: str,
        attributes: list[str],
        naming_context: str | None,
        moved_out: set[str],
        counters: Counters,
    ) -> list[_Entry]:
        """The entries under `base` matching the filter (and changed since the watermark, when `changed`).

        On AD a changed entry is looked for in the whole naming context: one found outside `base` was moved out
        and leaves the roster (an OU move changes the entry's uSNChanged, so it is among the changed ones).
        """
        base_dn = normalize_dn(base)
        search_base = base
        if changed:
            search_filter = f"(&{_parenthesized(search_filter)}{changed})"
            if naming_context and _under(base_dn, normalize_dn(naming_context)):
                search_base = naming_context
        entries: list[_Entry] = []
        for raw_dn, values in self._search(connection, search_base, search_filter, attributes, counters):
            entry = self._entry(raw_dn, values)
            if _under(entry.dn, base_dn):
                entries.append(entry)
            else:
                moved_out.add(entry.ref)
        return entries

    def _entry(self, raw_dn: str, values: dict[str, list[bytes]]) -> _Entry:
        guid, sid, dn = parse_extended_dn(raw_dn)
        dn = normalize_dn(dn)
        identity = _first(values, (_IDENTITY[self.settings.flavor],))
        raw_sid = values.get("objectsid")
        return _Entry(
            ref=(identity or guid or dn).lower(),
            dn=dn,
            values=values,
            sid=sid_text(bytes(raw_sid[0])) if raw_sid else sid,
        )

    def _complete_ranges(self, connection: Connection, entries: list[_Entry], counters: Counters) -> None:
        """Read the rest of every attribute a server sent only part of (`member;range=0-1499`): ask for
        `member;range=1500-2999`, … until a range ends in `*` (after the paged searches: one search at a time)."""
        for entry in entries:
            for key in [name for name in entry.values if ";range=" in name]:
                attribute = key.partition(";")[0]
                collected = entry.values.pop(key)
                current = key
                while True:
                    high = current.partition("=")[2].partition("-")[2]
                    if high == "*" or not high.isdigit():
                        break
                    # A bounded range: a DC answers at most MaxValRange values anyway, Samba as many as asked.
                    low = int(high) + 1
                    spec = f"{attribute};range={low}-{low + self.settings.range_size - 1}"
                    answer = self._base_entry(connection, f"<GUID={entry.ref}>" if self._ad else entry.dn, [spec],
                                              counters)  # fmt: skip
                    following = _range_key(answer or {}, attribute)
                    if answer is None or following is None:
                        break
                    collected.extend(answer[following])
                    current = following
                entry.values[attribute] = entry.values.get(attribute, []) + collected

    def _primary_groups(self, connection: Connection, found: _Found, counters: Counters) -> dict[str, str | None]:
        """Group SID -> group identity for the users' primary groups: from the groups read, else looked up by SID
        (an incremental read, or a primary group outside the group base)."""
        by_sid: dict[str, str | None] = {group.sid: group.ref for group in found.groups if group.sid}
        wanted = {sid for sid in (_primary_group_sid(user) for user in found.users) if sid}
        for sid in sorted(wanted - by_sid.keys()):
            answer = self._base_entry(connection, f"<SID={sid}>", ["objectGUID"], counters)
            by_sid[sid] = _first(answer, ("objectGUID",)) if answer else None
        return {sid: by_sid.get(sid) for sid in wanted}

    def _tombstones(
        self, connection: Connection, naming_context: str | None, changed: str, counters: Counters
    ) -> set[str]:
        """AD: the GUIDs of the entries deleted since the watermark (tombstones keep objectGUID and get a new
        uSNChanged), read with the show-deleted control. Without read access to CN=Deleted Objects the DC returns
        none, and deletions wait for the full read."""
        if not naming_context:
            return set()
        removed: set[str] = set()
        search = self._search(
            connection,
            naming_context,
            f"(&(isDeleted=TRUE){changed})",
            ["objectGUID"],
            counters,
            controls=[show_deleted_control(criticality=True)],
        )
        for _, values in search:
            guid = _first(values, ("objectGUID",))
            if guid:
                removed.add(guid.lower())
        return removed

    def _unlisted(self, connection: Connection, cached: Snapshot, found: _Found, counters: Counters) -> set[str]:
        """OpenLDAP: the cached entries no longer under the bases, found by listing every entry's entryUUID (one
        attribute per entry: what the server sends is a small fraction of a full read). The listing also gives
        the current DN of every entry, for the references of the changed ones."""
        settings = self.settings
        user_filter, group_filter = settings.filters()
        bases = [(settings.user_base, user_filter, cached.users)]
        if settings.group_base:
            bases.append((settings.group_base, group_filter, cached.groups))
        removed: set[str] = set()
        for base, search_filter, table in bases:
            listed: set[str] = set()
            listing = self._search(connection, base, search_filter, ["entryUUID"], counters, listing=True)
            for raw_dn, values in listing:
                entry = self._entry(raw_dn, values)
                listed.add(entry.ref)
                found.listed_names[entry.dn] = entry.ref
            removed |= set(table[REF].dropna()) - listed
        return removed

    def _root(self, connection: Connection, counters: Counters) -> tuple[str, str | None]:
        """The watermark this read starts from and (AD) the default naming context."""
        if not self._ad:
            return _generalized_time(self.clock() - self.settings.clock_skew_s), None
        attributes = ["highestCommittedUSN", "defaultNamingContext"]
        try:
            connection.search("", "(objectClass=*)", search_scope=BASE, attributes=attributes)
        except LDAPException as exc:
            raise RosterError(f"LDAP read of the root DSE on {self.server} failed: {_exception_text(exc)}") from None
        counters.requests += 1
        for entry in connection.response or ():
            values = {name.lower(): found for name, found in entry.get("raw_attributes", {}).items()}
            usn = _first(values, ("highestCommittedUSN",))
            if usn:
                return usn, _first(values, ("defaultNamingContext",))
        raise RosterError(f"LDAP server {self.server} has no highestCommittedUSN in its root DSE (not AD?)")

    def change_signal(self) -> ChangeSignal:
        """AD: the root DSE's `highestCommittedUSN` (one search; every write on this DC moves it, deletions too).
        OpenLDAP: the `contextCSN` of the database holding the user base (kept by the syncprov overlay; one or two
        base searches), else a listing of `modifyTimestamp` under the bases — one attribute per entry, so an entry
        changed, added or deleted moves it. Raises `RosterError`."""
        counters = Counters()
        connection = self._connect()
        try:
            if self._ad:
                usn, _ = self._root(connection, counters)
                return ChangeSignal(usn, f"highestCommittedUSN of {self.server}", counters.requests)
            suffix, csn = self._context_csn(connection, counters)
            if csn:
                return ChangeSignal(digest(csn), f"contextCSN of {suffix!r} on {self.server}", counters.requests)
            settings = self.settings
            user_filter, group_filter = settings.filters()
            bases = [(settings.user_base, user_filter)]
            if settings.group_base:
                bases.append((settings.group_base, group_filter))
            stamps: list[tuple[str, str]] = []
            for base, search_filter in bases:
                listing = self._search(connection, base, search_filter, ["modifyTimestamp"], counters, listing=True)
                stamps.extend((normalize_dn(dn), _first(values, ("modifyTimestamp",)) or "") for dn, values in listing)
        finally:
            _close(connection)
        stamps.sort()
        probe = f"modifyTimestamp of {len(stamps)} entries on {self.server} (no contextCSN: syncprov is not loaded)"
        return ChangeSignal(digest(stamps), probe, counters.requests)

    def _context_csn(self, connection: Connection, counters: Counters) -> tuple[str | None, str | None]:
        """OpenLDAP: the naming context holding the user base and its `contextCSN` values (joined), if any."""
        root = self._base_entry(connection, "", ["namingContexts"], counters) or {}
        user_base = normalize_dn(self.settings.user_base)
        contexts = [name for name in _values(root, "namingContexts") if _under(user_base, normalize_dn(name))]
        if not contexts:
            return None, None
        suffix = max(contexts, key=len)
        entry = self._base_entry(connection, suffix, ["contextCSN"], counters) or {}
        csns = sorted(_values(entry, "contextCSN"))
        return suffix, ";".join(csns) or None

    def _changed_filter(self, since: str) -> str:
        if self._ad:
            if not since.isdigit():
                raise StaleWatermarkError("not a USN")
            return f"(uSNChanged>={int(since) + 1})"
        if not re.fullmatch(r"\d{14}Z", since):
            raise StaleWatermarkError("not a GeneralizedTime")
        return f"(modifyTimestamp>={since})"

    # -- rows ------------------------------------------------------------------------------------------------------

    def _rows(
        self, found: _Found, cached_names: Mapping[str, str]
    ) -> tuple[list[dict[str, str | None]], list[dict[str, str | None]], list[tuple[str, str]]]:
        """Users, groups and direct edges, every reference (member, manager, memberOf) turned into an identity:
        from the extended DN on AD, else by the DN of an entry read now, listed now, or cached."""
        names = {**cached_names, **found.listed_names}
        names.update((entry.dn, entry.ref) for entry in (*found.users, *found.groups))
        attribute_map = self.settings.attribute_map()
        by_member = self.settings.membership == "memberOf"
        edges: list[tuple[str, str]] = []
        users = []
        for entry in found.users:
            row = self._user_row(entry, attribute_map, names)
            primary_sid = _primary_group_sid(entry) if self._ad else None
            row[PRIMARY_GROUP_REF] = found.primary_groups.get(primary_sid) if primary_sid else None
            users.append(row)
            if by_member:
                edges.extend((_resolve(value, names), entry.ref) for value in _values(entry.values, "memberOf"))
        groups = []
        for entry in found.groups:
            groups.append(
                {
                    REF: entry.ref,
                    NAME: entry.dn,
                    "group_name": _first(entry.values, attribute_map["group_name"]),
                    "external_id": _first(entry.values, attribute_map["group_external_id"]),
                    HIDDEN: "true" if self._hidden(entry) else None,
                }
            )
            if not by_member:
                for attribute in ("member", "uniqueMember"):
                    edges.extend((entry.ref, _resolve(value, names)) for value in _values(entry.values, attribute))
        return users, groups, edges

    def _hidden(self, group: _Entry) -> bool:
        if not self._ad or self.settings.include_builtin_groups:
            return False
        return _builtin(group)

    def _user_row(
        self, entry: _Entry, attribute_map: dict[str, tuple[str, ...]], names: Mapping[str, str]
    ) -> dict[str, str | None]:
        row: dict[str, str | None] = {REF: entry.ref, NAME: entry.dn}
        for column in USER_COLUMNS:
            if column == "manager":
                manager = _first(entry.values, attribute_map.get("manager", ()))
                row[MANAGER_REF] = _resolve(manager, names) if manager else None
            elif column != "active":
                row[column] = _first(entry.values, attribute_map.get(column, ()))
        row["active"] = self._active(entry.values, attribute_map)
        return row

    def _active(self, values: dict[str, list[bytes]], attribute_map: dict[str, tuple[str, ...]]) -> str:
        if "active" in attribute_map:
            value = _first(values, attribute_map["active"])
            return "false" if value is not None and value.strip().lower() in ("false", "0", "no") else "true"
        if self._ad:
            control = _first(values, ("userAccountControl",))
            if control is not None and control.strip().lstrip("-").isdigit():
                return "false" if int(control) & _ACCOUNT_DISABLED else "true"
        return "true"


def _cached_names(cached: Snapshot) -> dict[str, str]:
    """DN -> identity of every cached entry (the DN it had when last read)."""
    names: dict[str, str] = {}
    for table in (cached.users, cached.groups):
        known = table[table[NAME].notna() & table[REF].notna()]
        names.update(zip(known[NAME].astype(str), known[REF].astype(str), strict=True))
    return names


def _builtin(entry: _Entry) -> bool:
    """AD's built-in objects: critical system objects, the CN=Builtin container, well-known relative ids."""
    critical = (_first(entry.values, ("isCriticalSystemObject",)) or "").upper() == "TRUE"
    return critical or is_builtin_sid(entry.sid) or bool(_UNDER_BUILTIN.search(entry.dn))


def _primary_group_sid(user: _Entry) -> str | None:
    rid = _first(user.values, ("primaryGroupID",))
    if not user.sid or rid is None or not rid.isdigit():
        return None
    return f"{domain_sid_of(user.sid)}-{rid}"


def _resolve(value: str, names: Mapping[str, str]) -> str:
    """The identity a DN-valued attribute names: the GUID of an extended DN, else the identity of the entry with
    that DN (read now or cached), else the normalized DN itself (an entry outside the roster)."""
    guid, _, dn = parse_extended_dn(value)
    if guid:
        return guid
    normalized = _member_dn(dn)
    return names.get(normalized, normalized)


def _close(connection: Connection) -> None:
    with contextlib.suppress(LDAPException, OSError):  # a broken TLS handshake leaves no socket to unbind on
        connection.unbind()


def _range_key(values: dict[str, list[bytes]], attribute: str) -> str | None:
    """The `attribute;range=low-high` key AD uses when it sends only part of a multi-valued attribute."""
    prefix = f"{attribute.lower()};range="
    return next((name for name in values if name.startswith(prefix)), None)


def _values(values: dict[str, list[bytes]], attribute: str) -> list[str]:
    """The values of `attribute` (`values` is keyed by lower-case attribute names, as `_search` yields them)."""
    return [_text(value) for value in values.get(attribute.lower(), ())]


def _first(values: dict[str, list[bytes]], attributes: tuple[str, ...]) -> str | None:
    """The first value of the first of `attributes` that has one; a binary objectGUID as its GUID string."""
    for attribute in attributes:
        name = attribute.lower()
        found = values.get(name)
        if found:
            if name in _BINARY_GUIDS and len(found[0]) == 16:
                return str(uuid.UUID(bytes_le=bytes(found[0])))
            text = _text(found[0])
            if text:
                return text
    return None


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8", errors="replace")


def _member_dn(value: str) -> str:
    # uniqueMember may carry an optional "#'0101'B" UID suffix (RFC 4519 nameAndOptionalUID).
    return normalize_dn(re.sub(r"#'[01]*'B$", "", value))


def _result_text(connection: Connection) -> str:
    result = connection.result or {}
    return f"LDAP result {result.get('result')} {result.get('description', '')}".strip()


def _exception_text(exc: LDAPException) -> str:
    # ldap3 messages name hosts and sockets; they never carry the password, but keep only the first line.
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
