"""Client cost of a whole cycle: CPU per SCIM request of ``run_cycle`` with everything the pipeline does around each
call — auth, serialization, retries, the state store and the audit trail — and the split by stage from a profile.

The emulator runs in its own process at 0 ms latency, so every CPU second counted here is the pipeline's. Two
figures per run: the execution phases alone (``execute``: the calls plus every state and audit write), and the
whole cycle (plan and guards included). A second, profiled onboarding (``cProfile``, own time per function, grouped
by the package the function lives in) gives the split by stage; profiling slows everything, so only its shares are
reported, not its times.

    python benchmarks/cycle_cost.py                        # 10,000 users, 100 groups, 30,000 memberships, c=16
    python benchmarks/cycle_cost.py --users 2000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import EmulatorProcess, count_requests, emulator_process, write_roster

import scim_pipeline.sync.cycle as cycle_module
from scim_pipeline.scim import ScimClient
from scim_pipeline.sources import FolderRosterSource
from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.plan.roster import Roster, build_roster
from scim_pipeline.sync.state import ProvisioningState

TARGET_MS = 1.5

# (stage, path fragments of the functions' files); the first match wins, builtins are classed by name.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("HTTP framing (h11, h2)", ("/h11/", "/h2/", "/hpack/")),
    ("httpcore connection pool (stock transport)", ("/httpcore/", "/anyio/", "/sniffio/")),
    ("httpx request/response objects, auth", ("/httpx/", "scim_pipeline/scim/auth")),
    ("pacing, redaction, bounded reads", ("scim_pipeline/scim/pacing", "scim_pipeline/scim/redaction", "_exchange")),
    ("SCIM client (client, profile, errors)", ("scim_pipeline/scim/",)),
    ("executor bookkeeping (outcomes, audit rows)", ("scim_pipeline/sync/executor",)),
    ("state store and audit trail (SQLite)", ("scim_pipeline/sync/state",)),
    ("plan, guards, payloads (pandas)", ("scim_pipeline/sync/", "/pandas/", "/numpy/")),
    ("asyncio event loop and sockets", ("/asyncio/", "selectors.py", "socket.py", "ssl.py")),
    ("JSON", ("/json/",)),
    ("logging", ("/logging/",)),
]
OTHER = "other"
MAX_CALLER_DEPTH = 6


def _own_stage(filename: str) -> str:
    """The stage of a function by the file it lives in; builtins and generic stdlib helpers (typing, enum,
    contextlib, abc, …) are OTHER and get charged to their callers."""
    if filename == "~":
        return OTHER
    for stage, fragments in STAGES:
        if any(fragment in filename for fragment in fragments):
            return stage
    return OTHER


def _charge(stats: dict[Any, Any], function: Any, seconds: float, by_stage: Counter[str], depth: int = 0) -> None:
    """Charge ``seconds`` of ``function``'s own time to its stage, or, for a builtin or generic helper (``isinstance``,
    ``len``, ``dict.get``, enum, typing), to its callers' stages in proportion to the calls each made."""
    stage = _own_stage(function[0])
    callers = stats[function][4] if function in stats else {}
    if stage != OTHER or depth >= MAX_CALLER_DEPTH or not callers:
        by_stage[stage if stage != OTHER else "other (builtins, typing, enum, contextlib)"] += seconds
        return
    calls = {caller: counts[1] for caller, counts in callers.items()}
    total_calls = sum(calls.values()) or 1
    for caller, n in calls.items():
        _charge(stats, caller, seconds * n / total_calls, by_stage, depth + 1)


@dataclass
class Measured:
    name: str
    requests: int
    execute_cpu_s: float
    cycle_cpu_s: float
    wall_s: float
    emulator_cpu_s: float
    failures: int


async def _cycle(
    emulator: EmulatorProcess, state_path: Path, roster: Roster, concurrency: int
) -> tuple[float, float, float, int]:
    """One cycle; returns (CPU inside execute, CPU of the whole cycle, wall, failures)."""
    execute_cpu = 0.0
    original = cycle_module.execute

    async def timed_execute(*args: Any, **kwargs: Any) -> Any:
        nonlocal execute_cpu
        started = time.process_time()
        try:
            return await original(*args, **kwargs)
        finally:
            execute_cpu += time.process_time() - started

    cycle_module.execute = timed_execute  # type: ignore[assignment]
    state = ProvisioningState.open(state_path)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        async with ScimClient(emulator.settings(concurrency=concurrency)) as client:
            report = await run_cycle(client, state, roster, run_id="cycle-cost", guards=None)
    finally:
        state.close()
        cycle_module.execute = original
    return execute_cpu, time.process_time() - cpu, time.perf_counter() - wall, len(report.execution.failures)


def measure(
    name: str, emulator: EmulatorProcess, state_path: Path, roster: Roster, concurrency: int, *, run: Callable[..., Any]
) -> Measured:
    emulator.take_requests()
    emulator_cpu = emulator.cpu_s()
    execute_cpu, cycle_cpu, wall, failures = run(_cycle(emulator, state_path, roster, concurrency))
    time.sleep(0.2)  # the request log is line-buffered
    requests = count_requests(emulator.take_requests())
    return Measured(name, requests.scim, execute_cpu, cycle_cpu, wall, emulator.cpu_s() - emulator_cpu, failures)


def profile_split(
    emulator: EmulatorProcess, state_path: Path, roster: Roster, concurrency: int
) -> list[tuple[str, float]]:
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    asyncio.run(_cycle(emulator, state_path, roster, concurrency))
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_stage: Counter[str] = Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for function, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        _charge(raw, function, tottime, by_stage)
    total = sum(by_stage.values()) or 1.0
    return [(stage, seconds / total) for stage, seconds in by_stage.most_common()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--memberships", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="scim-cycle-cost-") as tmp:
        root = Path(tmp)
        folder = root / "roster"
        write_roster(folder, users=args.users, groups=args.groups, memberships=args.memberships)
        roster = build_roster(FolderRosterSource(folder).read(), None, shards=16)
        write_roster(folder, users=args.users, groups=args.groups, memberships=args.memberships, changed_share=0.05)
        changed = build_roster(FolderRosterSource(folder).read(), None, shards=16)
        with emulator_process(root) as emulator:
            state = root / "state.sqlite"
            rows.append(measure("onboarding", emulator, state, roster, args.concurrency, run=asyncio.run))
            rows.append(measure("5 % changed (PATCH)", emulator, state, changed, args.concurrency, run=asyncio.run))
        split: list[tuple[str, float]] = []
        if not args.no_profile:
            with emulator_process(root) as emulator:
                split = profile_split(emulator, root / "profiled.sqlite", roster, args.concurrency)

    print()
    print(
        f"Client cost — run_cycle against the emulator in a subprocess (0 ms); {args.users:,} users, "
        f"{args.groups:,} groups, {args.memberships:,} memberships; concurrency {args.concurrency}"
    )
    print(
        f"{'cycle':<22} {'requests':>9} {'wall s':>7} {'req/s':>7} {'execute CPU ms/req':>19} "
        f"{'cycle CPU ms/req':>17} {'emu CPU':>8} {'failed':>6}  target ≤ {TARGET_MS:g} ms"
    )
    for m in rows:
        per_request = m.execute_cpu_s / max(m.requests, 1) * 1000
        print(
            f"{m.name:<22} {m.requests:9,} {m.wall_s:7.1f} {m.requests / m.wall_s:7.0f} {per_request:19.2f} "
            f"{m.cycle_cpu_s / max(m.requests, 1) * 1000:17.2f} {m.emulator_cpu_s / m.wall_s:7.0%} {m.failures:6}  "
            f"{'met' if per_request <= TARGET_MS else 'MISSED'}"
        )
    print("execute = the calls with every state and audit write; cycle = plus adoption check, plan and guards")
    if split:
        print()
        print(
            "Split by stage (cProfile own time of a profiled onboarding, builtins charged to their callers; "
            "share of the pipeline's CPU):"
        )
        for stage, share in split:
            print(f"  {stage:<46} {share:6.1%}")
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"total wall time {time.perf_counter() - started:.1f} s; load average (1/5/15 min) {load} on "
        f"{os.cpu_count()} CPUs (other work on the machine slows every figure)"
    )
    return 0 if all(m.execute_cpu_s / max(m.requests, 1) * 1000 <= TARGET_MS for m in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
