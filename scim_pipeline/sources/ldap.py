"""LDAP and Active Directory as a roster source (ldap3).

Users and groups are read with simple paged results (RFC 2696) under their base DNs; memberships come from the
groups' `member` / `uniqueMember` values (or the users' `memberOf`), nested groups flattened, loops tolerated. TLS
(LDAPS or StartTLS) always verifies the server certificate; a plain `ldap://` connection without StartTLS is only
accepted on a loopback address, since the bind password would cross the network in clear text.

Incremental reads ask only for entries changed since the watermark: `modifyTimestamp` on OpenLDAP (the watermark is
the read's start time less the allowed clock skew, so a change made while a read runs is read again next time), the
domain controller's `highestCommittedUSN` / `uSNChanged` on Active Directory (bind to the same DC every time: USNs
are per DC). Deletions are seen by the periodic full read.
"""

from __future__ import annotations

import contextlib
import functools
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Literal, Self
from urllib.parse import urlsplit

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.settings import is_loopback_host
from scim_pipeline.sources._incremental import (
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

__all__ = ["LDAP_ATTRIBUTE_DEFAULTS", "LdapRosterSource", "LdapSettings"]

_PAGED_RESULTS: Final = "1.2.840.113556.1.4.319"
_ACCOUNT_DISABLED: Final = 0x2  # userAccountControl ACCOUNTDISABLE
_DN_SPACING: Final = re.compile(r"\s*([,=+])\s*")

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
    "ad": ("(&(objectCategory=person)(objectClass=user))", "(objectClass=group)"),
}
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
        users, groups = _DEFAULT_FILTERS[self.flavor]
        return self.user_filter or users, self.group_filter or groups


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
        )
        try:
            connection.open()
            if settings.start_tls and parts.scheme == "ldap" and not connection.start_tls():
                raise RosterError(f"LDAP server {self.server} refused StartTLS ({_result_text(connection)})")
            if not connection.bind():
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

    def _search(
        self, connection: Connection, base: str, search_filter: str, attributes: list[str], counters: Counters
    ) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Every entry under `base` matching the filter, page by page (simple paged results)."""
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
                    counters.entries += 1
                    raw = entry.get("raw_attributes", {})
                    yield entry["dn"], {name.lower(): found for name, found in raw.items()}
            control = result.get("controls", {}).get(_PAGED_RESULTS, {})
            cookie = control.get("value", {}).get("cookie") or None
            if not cookie:
                return

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        users, groups, edges, watermark = self._read(None, counters)
        return Snapshot.build(users, groups, edges), watermark

    def _read_changes(self, watermark: str, counters: Counters) -> tuple[Delta, str]:
        users, groups, edges, after = self._read(watermark, counters)
        by_member = self.settings.membership == "memberOf"
        return Delta(
            users=users,
            groups=groups,
            edges=edges,
            edges_replaced_for=() if by_member else {str(group["source_ref"]) for group in groups},
            member_edges_replaced_for={str(user["source_ref"]) for user in users} if by_member else (),
        ), after

    def _read(
        self, since: str | None, counters: Counters
    ) -> tuple[list[dict[str, str | None]], list[dict[str, str | None]], list[tuple[str, str]], str]:
        settings = self.settings
        user_filter, group_filter = settings.filters()
        connection = self._connect()
        try:
            watermark = self._watermark_now(connection, counters)
            if since is not None:
                changed = self._changed_filter(since)
                user_filter, group_filter = f"(&{user_filter}{changed})", f"(&{group_filter}{changed})"
            attribute_map = settings.attribute_map()
            user_attributes = sorted(
                {a for column in USER_COLUMNS for a in attribute_map.get(column, ())}
                | ({"userAccountControl"} if settings.flavor == "ad" else set())
                | set(attribute_map.get("active", ()))
                | ({"memberOf"} if settings.membership == "memberOf" else set())
            )
            users: list[dict[str, str | None]] = []
            edges: list[tuple[str, str]] = []
            for dn, values in self._search(connection, settings.user_base, user_filter, user_attributes, counters):
                ref = normalize_dn(dn)
                users.append(self._user_row(ref, values, attribute_map))
                if settings.membership == "memberOf":
                    edges.extend((normalize_dn(g), ref) for g in _values(values, "memberOf"))
            groups: list[dict[str, str | None]] = []
            large_groups: list[tuple[str, str, str, list[bytes]]] = []
            if settings.group_base:
                group_attributes = sorted(
                    {*attribute_map["group_name"], *attribute_map["group_external_id"], "member", "uniqueMember"}
                )
                for dn, values in self._search(
                    connection, settings.group_base, group_filter, group_attributes, counters
                ):
                    ref = normalize_dn(dn)
                    groups.append(
                        {
                            "source_ref": ref,
                            "group_name": _first(values, attribute_map["group_name"]),
                            "external_id": _first(values, attribute_map["group_external_id"]),
                        }
                    )
                    if settings.membership == "member":
                        for attribute in ("member", "uniqueMember"):
                            edges.extend((ref, _member_dn(value)) for value in _values(values, attribute))
                        ranged = _range_key(values, "member")
                        if ranged is not None:
                            large_groups.append((ref, dn, ranged, values[ranged]))
                # AD sends at most MaxValRange (1,500) members with a group; the rest are asked for by range,
                # after the paged search is done (one connection runs one search at a time).
                for ref, dn, key, first in large_groups:
                    fetch = functools.partial(self._base_entry, connection, dn, counters=counters)
                    members = _ranged_values(fetch, "member", key, first)
                    edges.extend((ref, _member_dn(_text(value))) for value in members)
        finally:
            _close(connection)
        return users, groups, edges, watermark

    def _base_entry(
        self, connection: Connection, dn: str, attribute: str, counters: Counters
    ) -> dict[str, list[bytes]]:
        """One attribute of one entry (a base search), keyed by lower-cased attribute names."""
        try:
            connection.search(dn, "(objectClass=*)", search_scope=BASE, attributes=[attribute])
        except LDAPException as exc:
            raise RosterError(f"LDAP read of {attribute} on {dn!r} failed: {_exception_text(exc)}") from None
        counters.requests += 1
        for entry in connection.response or ():
            if entry.get("type") == "searchResEntry":
                return {name.lower(): found for name, found in entry.get("raw_attributes", {}).items()}
        return {}

    def _watermark_now(self, connection: Connection, counters: Counters) -> str:
        if self.settings.flavor == "ad":
            connection.search("", "(objectClass=*)", search_scope=BASE, attributes=["highestCommittedUSN"])
            counters.requests += 1
            for entry in connection.response or ():
                values = entry.get("raw_attributes", {}).get("highestCommittedUSN")  # a case-insensitive dict
                if values:
                    return _text(values[0])
            raise RosterError(f"LDAP server {self.server} has no highestCommittedUSN in its root DSE (not AD?)")
        return _generalized_time(self.clock() - self.settings.clock_skew_s)

    def _changed_filter(self, since: str) -> str:
        if self.settings.flavor == "ad":
            if not since.isdigit():
                raise StaleWatermarkError("not a USN")
            return f"(uSNChanged>={int(since) + 1})"
        if not re.fullmatch(r"\d{14}Z", since):
            raise StaleWatermarkError("not a GeneralizedTime")
        return f"(modifyTimestamp>={since})"

    def _user_row(
        self, ref: str, values: dict[str, list[bytes]], attribute_map: dict[str, tuple[str, ...]]
    ) -> dict[str, str | None]:
        row: dict[str, str | None] = {"source_ref": ref}
        for column in USER_COLUMNS:
            if column == "manager":
                manager = _first(values, attribute_map.get("manager", ()))
                row["manager_ref"] = normalize_dn(manager) if manager else None
            elif column != "active":
                row[column] = _first(values, attribute_map.get(column, ()))
        row["active"] = self._active(values, attribute_map)
        return row

    def _active(self, values: dict[str, list[bytes]], attribute_map: dict[str, tuple[str, ...]]) -> str:
        if "active" in attribute_map:
            value = _first(values, attribute_map["active"])
            return "false" if value is not None and value.strip().lower() in ("false", "0", "no") else "true"
        if self.settings.flavor == "ad":
            control = _first(values, ("userAccountControl",))
            if control is not None and control.strip().lstrip("-").isdigit():
                return "false" if int(control) & _ACCOUNT_DISABLED else "true"
        return "true"


def _close(connection: Connection) -> None:
    with contextlib.suppress(LDAPException, OSError):  # a broken TLS handshake leaves no socket to unbind on
        connection.unbind()


def _range_key(values: dict[str, list[bytes]], attribute: str) -> str | None:
    """The `attribute;range=low-high` key AD uses when it sends only part of a multi-valued attribute."""
    prefix = f"{attribute.lower()};range="
    return next((name for name in values if name.startswith(prefix)), None)


def _ranged_values(
    fetch: Callable[[str], dict[str, list[bytes]]], attribute: str, key: str, first: list[bytes]
) -> list[bytes]:
    """Every value of a ranged attribute (AD range retrieval): ask `attribute;range=<next>-*` until a range ends
    in `*`. `fetch(attribute_spec)` reads the entry's attributes, keyed by lower-cased names."""
    collected = list(first)
    while True:
        bounds = key.partition("=")[2]
        high = bounds.partition("-")[2]
        if high == "*" or not high.isdigit():
            return collected
        answer = fetch(f"{attribute};range={int(high) + 1}-*")
        next_key = _range_key(answer, attribute)
        if next_key is None:
            return collected
        collected.extend(answer[next_key])
        key = next_key


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
