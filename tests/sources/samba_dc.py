"""A real Active Directory domain controller (Samba's, from Debian's packages) for the LDAP source tests.

The DC is provisioned into a temporary folder (`--dns-backend=NONE`, only the LDAP service, on 127.0.0.1), seeded
offline on its own database (`samba_provision.py`, run by Samba's Python), then started in the foreground
(`samba -i -M single`) as a child of the test session and stopped at its end. Samba makes its own CA and server
certificate (`private/tls/ca.pem`) at first start, for `DC1.<dns domain>`: the tests connect by that name with
certificate verification on, the name mapped to 127.0.0.1 in the test process's own mount namespace (a private
`/etc/hosts` bind-mounted over the machine's, which is never edited).

The domain (`CORP.EXAMPLE.TEST`, below `DC=corp,DC=example,DC=test`):

    OU=Staff
      OU=Engineering          u0000 … u(n/2-1)
      OU=Sales                the other half
    OU=Groups                 Team 00 … Team 09 (25 direct members each), Engineering All ⊃ Team 00, Team 01,
                              Team 01 ⊃ Team 02 (nested), Big List (35 members: range retrieval), Contractors (the
                              primary group of the last 10 users, who are no longer in its `member`), All Staff
                              ⊃ Domain Users (a built-in group: everyone whose primary group it is)
    OU=Moved                  empty: where the tests move entries to
    CN=Computers              WS01 (a computer account)

Every user but the heads of twenty reports to the head of their twenty (`manager`); every fifth user has no `mail`
(e-mail falls back to `userPrincipalName`); the last two are disabled.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SAMBA = shutil.which("samba") or ("/usr/sbin/samba" if Path("/usr/sbin/samba").exists() else None)
SAMBA_TOOL = shutil.which("samba-tool")
PROVISION_SCRIPT = Path(__file__).with_name("samba_provision.py")

REALM = "CORP.EXAMPLE.TEST"
DNS_DOMAIN = REALM.lower()
NETBIOS_DOMAIN = "CORP"
HOST_NAME = "dc1"
DC_NAME = f"{HOST_NAME}.{DNS_DOMAIN}"  # the name in Samba's certificate
DOMAIN_DN = "DC=corp,DC=example,DC=test"
ADMIN_DN = f"CN=Administrator,CN=Users,{DOMAIN_DN}"
ADMIN_PASSWORD = "Adm1n-Secret-Pw!7"
STAFF = f"OU=Staff,{DOMAIN_DN}"
ENGINEERING = f"OU=Engineering,{STAFF}"
SALES = f"OU=Sales,{STAFF}"
GROUPS = f"OU=Groups,{DOMAIN_DN}"
MOVED = f"OU=Moved,{DOMAIN_DN}"
TEAMS = 10
TEAM_SIZE = 25
BIG_LIST_SIZE = 35
CONTRACTORS = 10
DISABLED = 2
MANAGER_SPAN = 20
#: The groups the seed creates (the built-in groups of the domain come besides them).
SEEDED_GROUPS = (
    *(f"Team {t:02d}" for t in range(TEAMS)),
    "Engineering All",
    "Big List",
    "Contractors",
    "All Staff",
)
DOMAIN_USERS = f"CN=Domain Users,CN=Users,{DOMAIN_DN}"
_CLONE_NEWNS = 0x00020000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


@dataclass(frozen=True)
class DomainController:
    ldaps_url: str
    ldap_url: str  # plain LDAP on loopback: AD refuses simple binds there (strongerAuthRequired)
    ca_bundle: Path
    folder: Path
    users: int
    domain_sid: str


def user_name(i: int) -> str:
    return f"u{i:04d}"


def user_dn(i: int, users: int) -> str:
    return f"CN={user_name(i)},{ENGINEERING if i < users // 2 else SALES}"


def group_dn(name: str) -> str:
    return f"CN={name},{GROUPS}"


def team_members(team: int, users: int) -> list[int]:
    return [(team * TEAM_SIZE + k) % users for k in range(TEAM_SIZE)]


def contractors(users: int) -> list[int]:
    return list(range(users - CONTRACTORS, users))


def manager_of(i: int) -> int | None:
    return None if i % MANAGER_SPAN == 0 else i - i % MANAGER_SPAN


def seed_ldif(users: int) -> str:
    """The entries to add, as LDIF."""
    entries: list[list[str]] = []
    for ou in (STAFF, ENGINEERING, SALES, GROUPS, MOVED):
        entries.append([f"dn: {ou}", "objectClass: organizationalUnit"])
    for i in range(users):
        disabled = i >= users - DISABLED
        lines = [
            f"dn: {user_dn(i, users)}",
            "objectClass: user",
            f"sAMAccountName: {user_name(i)}",
            f"userPrincipalName: {user_name(i)}@{DNS_DOMAIN}",
            f"givenName: Given{i}",
            f"sn: Family{i}",
            f"displayName: User {i}",
            f"department: {'Engineering' if i < users // 2 else 'Sales'}",
            f"title: Title {i % 7}",
            f"employeeID: E{i:05d}",
            # NORMAL_ACCOUNT | PASSWD_NOTREQD (no password is set), ACCOUNTDISABLE for the last ones
            f"userAccountControl: {0x220 | (0x2 if disabled else 0)}",
        ]
        if i % 5:
            lines.append(f"mail: {user_name(i)}@example.com")
        manager = manager_of(i)
        if manager is not None:
            lines.append(f"manager: {user_dn(manager, users)}")
        entries.append(lines)
    # Nested groups first (a member must exist when its group is added).
    teams = {t: [user_dn(i, users) for i in team_members(t, users)] for t in range(TEAMS)}
    teams[1].append(group_dn("Team 02"))
    for t in (2, 1, *range(3, TEAMS), 0):
        entries.append(_group(f"Team {t:02d}", teams[t]))
    entries.append(_group("Engineering All", [group_dn("Team 00"), group_dn("Team 01")]))
    entries.append(_group("Big List", [user_dn(i, users) for i in range(BIG_LIST_SIZE)]))
    entries.append(_group("Contractors", [user_dn(i, users) for i in contractors(users)]))
    entries.append(_group("All Staff", [DOMAIN_USERS]))
    entries.append(
        [
            f"dn: CN=WS01,CN=Computers,{DOMAIN_DN}",
            "objectClass: computer",
            "sAMAccountName: WS01$",
            "userAccountControl: 4096",  # WORKSTATION_TRUST_ACCOUNT
        ]
    )
    return "\n\n".join("\n".join(lines) for lines in entries) + "\n"


def _group(name: str, members: list[str]) -> list[str]:
    # groupType: a global security group (ACCOUNT_GROUP | SECURITY_ENABLED)
    return [f"dn: {group_dn(name)}", "objectClass: group", f"sAMAccountName: {name}", "groupType: -2147483646"] + [
        f"member: {member}" for member in members
    ]


def _samba_python() -> str:
    """The interpreter Samba's Python bindings belong to: the one `samba-tool` runs with."""
    assert SAMBA_TOOL is not None
    first = Path(SAMBA_TOOL).read_text(errors="replace").splitlines()[0]
    return first.removeprefix("#!").strip().split()[0]


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def name_on_loopback(name: str, folder: Path) -> Iterator[None]:
    """Resolve `name` to 127.0.0.1 in this thread (the test session's main thread) and its child processes: a
    private mount namespace with its own `/etc/hosts` bind-mounted over the machine's (which is left untouched)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        pytest.skip(f"cannot map {name} to 127.0.0.1: unshare(CLONE_NEWNS) failed ({os.strerror(ctypes.get_errno())})")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        pytest.skip(f"cannot make the mount namespace private ({os.strerror(ctypes.get_errno())})")
    hosts = folder / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {name}\n")
    if libc.mount(str(hosts).encode(), b"/etc/hosts", None, _MS_BIND, None) != 0:
        pytest.skip(f"cannot bind-mount a hosts file ({os.strerror(ctypes.get_errno())})")
    try:
        yield
    finally:
        libc.umount2(b"/etc/hosts", 0)


@contextlib.contextmanager
def running_samba_dc(folder: Path, *, users: int) -> Iterator[DomainController]:
    """A provisioned and seeded Samba AD DC serving LDAP and LDAPS on 127.0.0.1; stopped on exit."""
    if SAMBA is None or SAMBA_TOOL is None:
        pytest.skip(
            "Samba's AD DC is not installed "
            "(apt-get install samba samba-ad-provision samba-dsdb-modules ldb-tools; .ci/run installs it)"
        )
    for port in (389, 636):
        if _port_open(port):
            pytest.fail(f"port {port} on 127.0.0.1 is already in use: the Samba DC needs it")
    target = folder / "dc"
    spec = {
        "target": str(target),
        "realm": REALM,
        "domain": NETBIOS_DOMAIN,
        "host_name": HOST_NAME,
        "admin_password": ADMIN_PASSWORD,
        "interface": "127.0.0.1",
        "seed": seed_ldif(users),
        "primary_groups": {group_dn("Contractors"): [user_dn(i, users) for i in contractors(users)]},
    }
    spec_file = folder / "provision.json"
    spec_file.write_text(json.dumps(spec))
    provisioned = subprocess.run(
        [_samba_python(), str(PROVISION_SCRIPT), str(spec_file)], capture_output=True, text=True, check=False
    )
    if provisioned.returncode != 0:
        pytest.fail(f"provisioning the Samba DC failed: {provisioned.stderr[-3000:]}")
    domain_sid = provisioned.stdout.strip().splitlines()[-1]
    smb_conf = target / "etc" / "smb.conf"
    log = (folder / "samba.out").open("wb")
    process = subprocess.Popen([SAMBA, "-i", "-M", "single", "-s", str(smb_conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (_port_open(636) and (target / "private" / "tls" / "ca.pem").exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                output = (folder / "samba.out").read_text(errors="replace")[-2000:]
                pytest.fail(f"the Samba DC did not start: {output}")
            time.sleep(0.1)
        yield DomainController(
            ldaps_url=f"ldaps://{DC_NAME}",
            ldap_url="ldap://127.0.0.1",
            ca_bundle=target / "private" / "tls" / "ca.pem",
            folder=folder,
            users=users,
            domain_sid=domain_sid,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
