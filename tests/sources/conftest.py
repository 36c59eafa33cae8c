"""A real OpenLDAP server (Debian's `slapd`) and a real Active Directory DC (Samba's, `samba_dc.py`) for the LDAP
source tests, started by the tests themselves.

Each directory is its own slapd process on a free loopback port, configured with a `slapd.conf` (mdb backend, the
core/cosine/inetorgperson/nis schemas, the memberof overlay, the refint overlay keeping `member` and `manager` in
step with renames and deletions, as directories usually do) and seeded offline with `slapadd` from one LDIF, which
takes well under a second for 5,000 users. The fixtures are session-scoped: the suite starts each server once.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.self_signed import self_signed_certificate
from tests.sources.samba_dc import DC_NAME, DomainController, name_on_loopback, running_samba_dc

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
SLAPADD = shutil.which("slapadd") or ("/usr/sbin/slapadd" if Path("/usr/sbin/slapadd").exists() else None)
SCHEMAS = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "directory-admin-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
USERS = 5_000
GROUP_COUNT = 200
MEMBERS_PER_GROUP = 25
#: g000 ⊃ g001 ⊃ … ⊃ g009 (a chain), and g010 ⊃ g011 ⊃ g010 (a loop).
NESTED_CHAIN = 10


@dataclass(frozen=True)
class Directory:
    url: str
    folder: Path
    users: int
    groups: int
    ca_bundle: Path | None = None
    ldaps_url: str | None = None


def user_dn(i: int) -> str:
    return f"uid=u{i:05d},{PEOPLE}"


def group_dn(g: int) -> str:
    return f"cn=g{g:03d},{GROUPS}"


def seed_ldif(users: int, groups: int) -> str:
    lines = [f"dn: {SUFFIX}", "objectClass: dcObject", "objectClass: organization", "o: Example", "dc: example", ""]
    for ou in ("people", "groups"):
        lines += [f"dn: ou={ou},{SUFFIX}", "objectClass: organizationalUnit", f"ou: {ou}", ""]
    for i in range(users):
        lines += [
            f"dn: {user_dn(i)}",
            "objectClass: inetOrgPerson",
            f"uid: u{i:05d}",
            f"cn: User {i}",
            f"givenName: Given{i}",
            f"sn: Family{i}",
            f"mail: u{i:05d}@example.org",
            f"employeeNumber: {i:05d}",
            f"departmentNumber: D{i % 20}",
            f"title: Engineer {i % 7}",
        ]
        if i % 100:  # every user but the department heads reports to the head of their hundred
            lines.append(f"manager: {user_dn(i - i % 100)}")
        lines.append("")
    for g in range(groups):
        members = [user_dn((g * MEMBERS_PER_GROUP + k) % users) for k in range(MEMBERS_PER_GROUP)]
        if g < NESTED_CHAIN - 1:
            members.append(group_dn(g + 1))
        if g == NESTED_CHAIN:
            members.append(group_dn(NESTED_CHAIN + 1))
        if g == NESTED_CHAIN + 1:
            members.append(group_dn(NESTED_CHAIN))
        lines += [f"dn: {group_dn(g)}", "objectClass: groupOfNames", f"cn: g{g:03d}"]
        lines += [f"member: {member}" for member in members]
        lines.append("")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(folder: Path, tls: tuple[Path, Path] | None, *, syncprov: bool = False) -> Path:
    includes = "".join(f"include {SCHEMAS / name}.schema\n" for name in ("core", "cosine", "inetorgperson", "nis"))
    tls_lines = ""
    if tls is not None:
        cert, key = tls
        tls_lines = f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
    replication = ("moduleload syncprov\n", "overlay syncprov\n") if syncprov else ("", "")
    config = folder / "slapd.conf"
    config.write_text(
        f"""{includes}modulepath {MODULES}
moduleload back_mdb
moduleload memberof
moduleload refint
{replication[0]}pidfile {folder / "slapd.pid"}
sizelimit unlimited
{tls_lines}database mdb
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {folder / "db"}
maxsize 1073741824
index objectClass eq
index uid eq
overlay memberof
overlay refint
refint_attributes member uniqueMember manager
{replication[1]}"""
    )
    return config


@contextlib.contextmanager
def running_slapd(
    folder: Path, *, users: int, groups: int, tls: bool = False, syncprov: bool = False
) -> Iterator[Directory]:
    """A seeded slapd in `folder`, listening on loopback only; stopped (and its data left) on exit. `syncprov`
    loads the overlay that keeps the suffix's contextCSN (what replication and the leaver sensor read)."""
    if SLAPD is None or SLAPADD is None or not (SCHEMAS / "inetorgperson.schema").exists():
        pytest.skip("slapd is not installed (apt-get install slapd ldap-utils; .ci/run installs it)")
    (folder / "db").mkdir(parents=True)
    certificate = self_signed_certificate(folder) if tls else None
    config = _config(folder, certificate, syncprov=syncprov)
    (folder / "seed.ldif").write_text(seed_ldif(users, groups))
    subprocess.run([SLAPADD, "-q", "-f", str(config), "-l", str(folder / "seed.ldif")], check=True)
    port, ldaps_port = _free_port(), _free_port()
    listen = f"ldap://127.0.0.1:{port}/" + (f" ldaps://127.0.0.1:{ldaps_port}/" if tls else "")
    process = subprocess.Popen(
        [SLAPD, "-d", "0", "-h", listen, "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "slapd.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "slapd.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"slapd did not start: {log}")
                time.sleep(0.05)
        # Incremental reads filter on modifyTimestamp (1 s resolution): let the seeding's second pass.
        time.sleep(1.05)
        yield Directory(
            url=f"ldap://127.0.0.1:{port}",
            folder=folder,
            users=users,
            groups=groups,
            ca_bundle=certificate[0] if certificate else None,
            ldaps_url=f"ldaps://127.0.0.1:{ldaps_port}" if tls else None,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    """5,000 users and 200 groups (25 direct members each, a chain of nested groups and a loop)."""
    with running_slapd(tmp_path_factory.mktemp("slapd"), users=USERS, groups=GROUP_COUNT) as server:
        yield server


@pytest.fixture(scope="session")
def tls_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    """A small directory served over StartTLS and LDAPS with a self-signed certificate for 127.0.0.1."""
    with running_slapd(tmp_path_factory.mktemp("slapd-tls"), users=20, groups=2, tls=True) as server:
        yield server


#: Users in the Samba DC's domain (besides its built-in accounts).
AD_USERS = 300


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DomainController]:
    """A Samba AD DC with 300 users in OUs, teams, nested groups, a primary group and a computer (samba_dc.py),
    reached over LDAPS by its own name (mapped to 127.0.0.1 in this process's mount namespace).

    It listens on the fixed LDAP ports, so only one test process may run it: its tests live in one file, which a
    parallel run (`--dist loadfile`) gives to one worker."""
    folder = tmp_path_factory.mktemp("samba-dc")
    with name_on_loopback(DC_NAME, folder), running_samba_dc(folder, users=AD_USERS) as controller:
        yield controller
