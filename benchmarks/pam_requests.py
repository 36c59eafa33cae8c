"""PAM requests: what an access file of C containers and P permissions costs in requests, and the access snapshot's
wall time. Counted from the emulator's request log (the emulator in its own process, over loopback).

Cycles (each one ``run_cycle`` with the access file, the state store in a temporary SQLite file):

1. first provisioning into an empty target (the roster's users and groups too): per container one name lookup,
   one create — and no permissions read, the container being new; per permission one POST;
2. no change: per container one ``GET /Containers/{id}`` and ONE ``container.value eq`` permissions read, no write
   (the snapshot is that read: its wall time is the cycle's PAM read time);
3. 10 % of the permissions get other rights: per changed permission one DELETE and one POST (never edited in place).

    python benchmarks/pam_requests.py                            # 500 containers, 5,000 permissions
    python benchmarks/pam_requests.py --containers 50 --permissions-per-container 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import count_requests, emulator_process, write_roster

from scim_pipeline.resources.pipeline import RosterSourceResource
from scim_pipeline.scim import ScimClient
from scim_pipeline.sync.cycle import CycleReport, run_cycle
from scim_pipeline.sync.pam.access import RIGHTS, parse_access
from scim_pipeline.sync.plan.guards import GuardSettings
from scim_pipeline.sync.state import ProvisioningState


def access_entries(containers: int, per_container: int, groups: int, users: int, *, changed: float, seed: int) -> Any:
    """C containers with P/C permissions each: mostly groups, every fourth a user; rights drawn from the seed's four.
    ``changed`` gives that share of the permissions other rights (the same principals)."""
    rng = random.Random(seed)
    flip = random.Random(seed + 1)
    entries = []
    for c in range(containers):
        permissions = []
        for k in range(per_container):
            index = c * per_container + k
            principal = (
                {"user": f"user{(index // 4) % users:07d}"} if k % 4 == 3 else {"group": f"Group-{index % groups:05d}"}
            )
            rights = sorted(rng.sample(RIGHTS, rng.randint(1, 4)))
            if changed and flip.random() < changed:
                rights = ["View"] if rights != ["View"] else ["Edit", "View"]
            permissions.append({**principal, "rights": rights})
        entries.append({"name": f"Folder {c:04d}", "permissions": permissions})
    return entries


async def cycle(settings: Any, state: ProvisioningState, roster: Any, access: Any, run_id: str) -> CycleReport:
    async with ScimClient(settings) as client:
        return await run_cycle(
            client,
            state,
            roster,
            run_id=run_id,
            access=access,
            rejected=roster.rejected,
            guards=GuardSettings(allow_mass_changes=True),
        )


def pam_counts(records: list[dict[str, Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for record in records:
        kind = record.get("resource_type", "")
        if kind in ("Containers", "ContainerPermissions", "PrivilegedData"):
            counts[f"{record['method']} {kind}"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("--permissions-per-container", type=int, default=10)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    containers, per = args.containers, args.permissions_per_container
    permissions = containers * per
    with tempfile.TemporaryDirectory() as tmp, emulator_process(Path(tmp)) as emulator:
        workdir = Path(tmp)
        write_roster(workdir / "roster", users=args.users, groups=args.groups, memberships=args.users)
        roster = RosterSourceResource(roster=str(workdir / "roster"), shards=1).load().roster
        users, groups = roster.users["key"].astype(str), roster.groups["key"].astype(str)

        def access(changed: float) -> Any:
            entries = access_entries(containers, per, args.groups, args.users, changed=changed, seed=3)
            return parse_access(entries, path="benchmark", users=users, groups=groups)

        settings = emulator.settings(concurrency=args.concurrency)
        rows = []
        with ProvisioningState.open(workdir / "state.sqlite") as state:
            for name, share in (("first provisioning", 0.0), ("no change", 0.0), ("10 % other rights", 0.1)):
                file = access(share)
                emulator.take_requests()
                started = time.perf_counter()
                report = asyncio.run(cycle(settings, state, roster, file, name))
                wall = time.perf_counter() - started
                time.sleep(0.2)  # the request log is line-buffered
                records = emulator.take_requests()
                pam = pam_counts(records)
                assert report.pam is not None
                failed = len(report.execution.failures)
                changed = report.pam.plan.count("permissions", "add")
                rows.append((name, pam, count_requests(records), wall, report.pam.read_s, failed, changed, report))
        print(f"\nPAM requests: {containers:,} containers, {permissions:,} permissions, concurrency {args.concurrency}")
        print(
            f"{'cycle':<22}{'PAM requests':>13}{'/container':>12}{'/permission':>13}{'read+plan s':>13}{'cycle s':>9}"
        )
        for name, pam, _counts, wall, read_s, failed, changed, _report in rows:
            total = sum(pam.values())
            print(
                f"{name:<22}{total:>13,}{total / containers:>12.2f}{total / permissions:>13.2f}"
                f"{read_s:>13.2f}{wall:>9.2f}" + (f"  ({failed} failed)" if failed else "")
            )
            print("    " + ", ".join(f"{kind}: {n:,}" for kind, n in sorted(pam.items())))
            if name.startswith("10 %"):
                print(f"    permissions with other rights: {changed:,} (each one DELETE + one POST)")
        snapshot = rows[1][7].pam.access_snapshot
        print(
            f"\naccess snapshot (no-change cycle): {len(snapshot):,} rows (one per right) over "
            f"{snapshot['container_id'].nunique():,} containers, read in {rows[1][4]:.2f} s "
            f"({rows[1][1]['GET ContainerPermissions']:,} permission reads = one per container)"
        )
    print(f"load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
