"""Reading 5,000 users from LDAP: a full read, an incremental read after 10 changes, and the deletion check's cost.

    python benchmarks/ldap_read.py                    # OpenLDAP (slapd) and Active Directory (Samba's DC)
    python benchmarks/ldap_read.py --only slapd       # or --only samba; --users N; --repeat R

Both servers are the test suite's (tests/sources/conftest.py, tests/sources/samba_dc.py), started here on loopback
from Debian's packages and seeded offline: slapd with 5,000 users and 200 groups of 25 (nested, a loop), the DC with
5,000 users in two OUs, teams, nested groups and a primary group (its built-in objects come on top and are left out).
The Samba DC is reached over LDAPS by its certificate's name, mapped to 127.0.0.1 in this process's own mount
namespace (run as root). Each figure is the median of `--repeat` reads; each incremental read follows 10 fresh
changes (titles of 10 users) and is made twice, with the deletion check (`find_deletions`, the default) and without,
by two sources with their own caches: the difference is what the check costs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ldap3 import MODIFY_REPLACE, NONE, Connection, Server
from pydantic import SecretStr

from scim_pipeline.sources import MemoryWatermarkStore, SourceReport
from scim_pipeline.sources.ldap import LdapRosterSource, LdapSettings, _VerifiedTls
from tests.sources import conftest as slapd
from tests.sources import samba_dc as samba


@dataclass
class Directory:
    name: str
    settings: LdapSettings
    change: Callable[[int], None]  # make the k-th round of 10 changes
    pause_s: float  # how long a change needs to be newer than the watermark (modifyTimestamp: 1 s)


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    report: SourceReport


def measure(source: LdapRosterSource) -> Measured:
    started, cpu = time.perf_counter(), time.process_time()
    _, report = source.read_with_report()
    return Measured(time.perf_counter() - started, time.process_time() - cpu, report)


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(directory: Directory, repeat: int, work: Path) -> None:
    full = [measure(LdapRosterSource(settings=directory.settings)) for _ in range(repeat)]
    with_check = LdapRosterSource(settings=directory.settings, cache_dir=work / "on", watermarks=MemoryWatermarkStore())
    without = LdapRosterSource(
        settings=directory.settings.model_copy(update={"find_deletions": False}),
        cache_dir=work / "off",
        watermarks=MemoryWatermarkStore(),
    )
    with_check.read()
    without.read()
    on: list[Measured] = []
    off: list[Measured] = []
    for k in range(repeat):
        time.sleep(directory.pause_s)
        directory.change(k)
        first, second = (with_check, without) if k % 2 == 0 else (without, with_check)
        a, b = measure(first), measure(second)
        (on if first is with_check else off).append(a)
        (off if first is with_check else on).append(b)
    assert all(m.report.mode == "incremental" for m in on + off)

    print(f"\n{directory.name} — {full[0].report.rows['users']:,} users, {full[0].report.rows['groups']:,} groups")
    print(f"{'read':<44} {'wall s':>8} {'CPU s':>7} {'requests':>9} {'entries':>8} {'listed':>7}")

    def line(label: str, runs: list[Measured]) -> None:
        report = runs[0].report
        wall, cpu = median([m.wall_s for m in runs]), median([m.cpu_s for m in runs])
        print(
            f"{label:<44} {wall:>8.3f} {cpu:>7.3f} {report.requests:>9,} {report.entries_fetched:>8,} "
            f"{report.entries_listed:>7,}"
        )

    line("full read", full)
    line("incremental, 10 changes, deletion check", on)
    line("incremental, 10 changes, no deletion check", off)
    extra_wall = median([m.wall_s for m in on]) - median([m.wall_s for m in off])
    extra_requests = on[0].report.requests - off[0].report.requests
    extra_entries = (on[0].report.entries_fetched + on[0].report.entries_listed) - off[0].report.entries_fetched
    print(
        f"deletion check: +{extra_wall:.3f} s wall (median), +{extra_requests} requests, "
        f"+{extra_entries:,} entries returned ({on[0].report.entries_listed:,} listed by identity only)"
    )


@contextlib.contextmanager
def slapd_directory(users: int, work: Path) -> Iterator[Directory]:
    with slapd.running_slapd(work / "slapd", users=users, groups=slapd.GROUP_COUNT) as server:

        def change(k: int) -> None:
            with Connection(server.url, slapd.ADMIN_DN, slapd.ADMIN_PASSWORD, auto_bind=True) as connection:
                for i in range(10):
                    dn = slapd.user_dn((k * 10 + i) % users)
                    assert connection.modify(dn, {"title": [(MODIFY_REPLACE, [f"Round {k}"])]})

        settings = LdapSettings(
            url=server.url,
            bind_dn=slapd.ADMIN_DN,
            bind_password=SecretStr(slapd.ADMIN_PASSWORD),
            user_base=slapd.PEOPLE,
            group_base=slapd.GROUPS,
            clock_skew_s=0,
        )
        yield Directory("OpenLDAP (slapd 2.5, mdb), plain LDAP on loopback", settings, change, pause_s=1.05)


@contextlib.contextmanager
def samba_directory(users: int, work: Path) -> Iterator[Directory]:
    folder = work / "samba"
    folder.mkdir()
    with samba.name_on_loopback(samba.DC_NAME, folder), samba.running_samba_dc(folder, users=users) as dc:
        tls = _VerifiedTls(ca_certs_file=str(dc.ca_bundle), sni=samba.DC_NAME)

        def change(k: int) -> None:
            server = Server(samba.DC_NAME, 636, use_ssl=True, tls=tls, get_info=NONE)
            with Connection(server, samba.ADMIN_DN, samba.ADMIN_PASSWORD, auto_bind=True) as connection:
                for i in range(10):
                    dn = samba.user_dn((k * 10 + i) % users, users)
                    assert connection.modify(dn, {"title": [(MODIFY_REPLACE, [f"Round {k}"])]})

        settings = LdapSettings(
            url=dc.ldaps_url,
            ca_bundle=dc.ca_bundle,
            bind_dn=samba.ADMIN_DN,
            bind_password=SecretStr(samba.ADMIN_PASSWORD),
            flavor="ad",
            user_base=samba.DOMAIN_DN,
            group_base=samba.DOMAIN_DN,
        )
        yield Directory("Active Directory (Samba 4.17 DC), LDAPS on loopback", settings, change, pause_s=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("slapd", "samba"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        print(f"LDAP reads, {options.users:,} users, page size 500, median of {options.repeat}")
        if options.only in (None, "slapd"):
            with slapd_directory(options.users, work) as directory:
                run(directory, options.repeat, work / "slapd-cache")
        if options.only in (None, "samba"):
            with samba_directory(options.users, work) as directory:
                run(directory, options.repeat, work / "samba-cache")


if __name__ == "__main__":
    main()
