"""Operation budget: onboarding over successive cycles (``SCIM_MAX_OPERATIONS_PER_CYCLE``).

The real ``scim-pipeline sync`` (the sync job in one Dagster run, in a subprocess) onboards a generated roster into
the emulator (its own process, request log in a file) with a budget of N writes per cycle, until a cycle plans
nothing. Per cycle: writes and reads (from the emulator's log), what the budget deferred, wall and CPU time. Checks:
every cycle writes at most N, the cycles needed are ⌈writes needed / N⌉ (+1 that plans nothing), no userName is
created twice, and no cycle after the first reads more than the one before (no read grows with the backlog).

    python benchmarks/operation_budget.py                          # 20,000 users, N = 5,000 (the issue's figures)
    python benchmarks/operation_budget.py --users 200000 --budget 20000 --groups 100 --memberships 200000
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, count_requests, emulator_process, pipeline_env, run_cli
from end_to_end import write_roster as write_generated_roster


def user_names(base_url: str, token_url: str) -> Counter[str]:
    """Every userName on the emulator, counted (a duplicate shows as 2)."""
    token = httpx.post(
        token_url,
        data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET},
    ).json()["access_token"]
    names: Counter[str] = Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        start = 1
        while True:
            page = http.get(f"{base_url}/Users", params={"startIndex": start, "count": 1000}).json()
            resources = page.get("Resources", [])
            names.update(resource["userName"] for resource in resources)
            start += len(resources)
            if not resources or start > int(page["totalResults"]):
                return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=5_000)
    parser.add_argument("--groups", type=int, default=0)
    parser.add_argument("--memberships", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        shape = write_generated_roster(
            workdir / "roster", users=args.users, groups=args.groups, memberships=args.memberships
        )
        expected_cycles = math.ceil(shape.minimal_writes / args.budget)
        with emulator_process(workdir, page_size_cap=1000) as emulator:
            env = pipeline_env(emulator, workdir, workdir / "roster", concurrency=args.concurrency)
            env["SCIM_MAX_OPERATIONS_PER_CYCLE"] = str(args.budget)
            print(
                f"{args.users:,} users, {shape.groups:,} groups, {shape.memberships:,} memberships: "
                f"{shape.minimal_writes:,} writes needed, budget {args.budget:,} per cycle → {expected_cycles} cycles"
            )
            print(f"{'cycle':>5} {'writes':>8} {'reads':>6} {'deferred':>9} {'wall s':>7} {'CLI CPU s':>9}  result")
            rows = []
            for number in range(1, expected_cycles + 3):
                run = run_cli(["sync", "--json"], env, workdir)
                counts = count_requests(emulator.take_requests())
                document = json.loads(run.output[run.output.index("{") :])
                deferred = int(document["counts"].get("deferred_by_budget", 0))
                rows.append((counts.writes, counts.reads, deferred))
                print(
                    f"{number:>5} {counts.writes:>8,} {counts.reads:>6,} {deferred:>9,} {run.wall_s:>7.1f} "
                    f"{run.cpu_s:>9.1f}  {document['result']}"
                )
                if counts.writes == 0:
                    break
            names = user_names(emulator.base_url, emulator.token_url)
    writes = [w for w, _, _ in rows]
    reads = [r for _, r, _ in rows]
    checks = {
        f"every cycle writes at most {args.budget:,}": max(writes) <= args.budget,
        f"converged in {expected_cycles} cycles (the next plans nothing)": len(rows) == expected_cycles + 1
        and writes[-1] == 0,
        f"{args.users:,} users on the target, none twice": sum(names.values()) == args.users
        and max(names.values(), default=1) == 1,
        "reads per cycle do not grow": all(later <= earlier for earlier, later in itertools.pairwise(reads[1:])),
    }
    for label, passed in checks.items():
        print(f"{'ok  ' if passed else 'FAIL'} {label}")
    load = os.getloadavg()
    print(
        f"total wall time {time.perf_counter() - started:.1f} s; load average (1/5/15 min) "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs"
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
