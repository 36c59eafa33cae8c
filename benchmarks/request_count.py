"""Request count: does a cycle send only the requests it needs? Counted from the emulator's request log.

Cycles (each one ``scim-pipeline sync``, the command users run — the code location's sync job in one Dagster run;
the emulator in a subprocess, the state store in a temporary SQLite file):

1. first onboarding of U users, G groups, M memberships into an empty target: at most U + G + Σ⌈M_g / chunk⌉ writes
   plus the paged reads of one target snapshot and the three discovery reads (which attributes the target stores);
   no per-membership request;
2. no change: the same roster again — at most 3 HTTP requests (the state store is not empty, so no snapshot);
3. 1 % changed: about 1 % of the users' writes;
4. adoption: a new, empty state store against the populated target — the snapshot's pages (⌈U/100⌉ + ⌈G/100⌉) and
   no write, since every object already matches.

    python benchmarks/request_count.py                     # 10,000 users, 100 groups, 30,000 memberships
    python benchmarks/request_count.py --users 100000 --groups 1000 --memberships 300000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import (
    EmulatorProcess,
    RequestCounts,
    count_requests,
    emulator_process,
    pipeline_env,
    run_cli,
    write_roster,
)

PAGE = 100


@dataclass
class Cycle:
    name: str
    counts: RequestCounts
    wall_s: float
    bound: str
    met: bool
    failures: int


def _run(
    emulator: EmulatorProcess, workdir: Path, roster: Path, state_path: Path, concurrency: int
) -> tuple[RequestCounts, float, int]:
    env = pipeline_env(emulator, workdir, roster, concurrency=concurrency)
    env["SCIM_STATE_URL"] = f"sqlite:///{state_path}"
    emulator.take_requests()
    cli = run_cli(["sync"], env, workdir)
    time.sleep(0.2)  # the request log is line-buffered; let the last lines land
    if cli.returncode != 0:
        print(f"scim-pipeline sync exited {cli.returncode}:\n{cli.output[-3000:]}", file=sys.stderr)
    return count_requests(emulator.take_requests()), cli.wall_s, int(cli.returncode != 0)


def run(args: argparse.Namespace) -> list[Cycle]:
    cycles: list[Cycle] = []
    with tempfile.TemporaryDirectory(prefix="scim-requests-") as tmp:
        root = Path(tmp)
        roster = root / "roster"
        changed = root / "changed"
        shape = write_roster(roster, users=args.users, groups=args.groups, memberships=args.memberships)
        write_roster(changed, users=args.users, groups=args.groups, memberships=args.memberships, changed_share=0.01)
        snapshot_pages = max(1, math.ceil(args.users / PAGE)) + max(1, math.ceil(args.groups / PAGE))
        with emulator_process(root) as emulator:
            state = root / "state.sqlite"

            def cycle(name: str, folder: Path, state_path: Path, bound: str, check: object) -> None:
                counts, wall, failures = _run(emulator, root, folder, state_path, args.concurrency)
                met = bool(check(counts)) if callable(check) else False
                cycles.append(Cycle(name, counts, wall, bound, met, failures))
                print(_render(cycles[-1:], header=len(cycles) == 1), flush=True)

            cycle(
                "first onboarding",
                roster,
                state,
                f"writes ≤ {shape.minimal_writes:,}, reads ≤ 2 + 3 discovery",
                lambda c: c.writes <= shape.minimal_writes and c.reads <= 5,
            )
            cycle("no change", roster, state, "requests ≤ 3", lambda c: c.total <= 3)
            changed_users = round(args.users * 0.01)
            cycle(
                "1 % changed",
                changed,
                state,
                f"writes ≈ {changed_users:,} (1 % of users)",
                lambda c: changed_users * 0.9 <= c.writes <= changed_users * 1.1 + 1,
            )
            cycle(
                "adoption (empty state)",
                changed,
                root / "fresh-state.sqlite",
                f"reads = {snapshot_pages} pages + discovery, writes = 0",
                lambda c: c.reads <= snapshot_pages + 3 and c.writes == 0,
            )
    return cycles


def _render(cycles: list[Cycle], *, header: bool = True) -> str:
    lines = []
    if header:
        lines.append(
            f"{'cycle':<24} {'requests':>9} {'writes':>8} {'reads':>6} {'token':>5} {'wall s':>7} {'failed':>6}  "
            f"{'target':<44} met   writes by kind"
        )
    for c in cycles:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(c.counts.writes_by_type.items()))
        lines.append(
            f"{c.name:<24} {c.counts.total:9,} {c.counts.writes:8,} {c.counts.reads:6,} {c.counts.token:5} "
            f"{c.wall_s:7.1f} {c.failures:6}  {c.bound:<44} {'yes' if c.met else 'NO ':<5} {kinds}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--memberships", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cycles = run(args)
    print()
    print(
        f"Request count — `scim-pipeline sync` against the emulator in a subprocess; {args.users:,} users, "
        f"{args.groups:,} groups, {args.memberships:,} memberships; member chunk 100; counts from the emulator's log"
    )
    print(_render(cycles))
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"total wall time {time.perf_counter() - started:.1f} s; load average (1/5/15 min) {load} on "
        f"{os.cpu_count()} CPUs (other work on the machine slows every figure)"
    )
    return 0 if all(c.met for c in cycles) else 1


if __name__ == "__main__":
    sys.exit(main())
