"""Throughput at the target's limit, with the emulator in a subprocess.

Part 1 — latency-bound: against the emulator with 20 ms of added latency, user creates per second at concurrency 1
and at concurrency 32 through one ``ScimClient``; the ratio should be ≥ 20x.

Part 2 — rate-limited: against the emulator answering 429 (``Retry-After: 1``) above 200 requests/s, creates for a
fixed time (60 s by default) at concurrency 32, for each client pacing (none: 429s and Retry-After only; the client's
``rate_limit_per_s``); reports the sustained rate against the limit, the 429s, and whether any operation was lost
(every create that succeeded is on the target; none failed).

    python benchmarks/throughput_at_limit.py                       # about 3 minutes
    python benchmarks/throughput_at_limit.py --duration-s 20 --pacing none 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import stamina.instrumentation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import EmulatorProcess, count_requests, emulator_process

from scim_pipeline.scim import ScimClient, ScimPipelineError


@dataclass
class Measure:
    label: str
    ops: int
    wall_s: float
    client_cpu_s: float
    emulator_cpu_s: float
    failed: int
    rate_limited: int = 0
    requests: int = 0
    lost: int = 0

    @property
    def per_s(self) -> float:
        return self.ops / self.wall_s if self.wall_s else 0.0


async def _creates(
    emulator: EmulatorProcess,
    label: str,
    *,
    concurrency: int,
    rate: float | None = None,
    ops: int | None = None,
    duration_s: float | None = None,
) -> tuple[Measure, list[str]]:
    """Create users with ``concurrency`` workers, for ``ops`` operations or ``duration_s`` seconds."""
    run = uuid.uuid4().hex[:8]
    created: list[str] = []
    failed = 0
    counter = iter(range(10**9))
    async with ScimClient(emulator.settings(concurrency=concurrency, rate_limit_per_s=rate)) as client:
        await client.get_json("/ServiceProviderConfig")  # token and first connection
        emulator.take_requests()
        emulator_cpu = emulator.cpu_s()
        cpu, started = time.process_time(), time.perf_counter()
        deadline = started + duration_s if duration_s else None

        async def worker() -> None:
            nonlocal failed
            while True:
                index = next(counter)
                if (ops is not None and index >= ops) or (deadline is not None and time.perf_counter() >= deadline):
                    return
                body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"t{run}-{index}"}
                try:
                    result = await client.create("Users", body)
                except ScimPipelineError:  # a benchmark counts failures, it does not stop
                    failed += 1
                else:
                    if result.scim_id:
                        created.append(result.scim_id)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        emulator_cpu = emulator.cpu_s() - emulator_cpu
    await asyncio.sleep(0.2)
    counts = count_requests(emulator.take_requests())
    measure = Measure(
        label,
        len(created),
        wall,
        cpu,
        emulator_cpu,
        failed,
        rate_limited=counts.by_status[429],
        requests=counts.scim,
    )
    return measure, created


async def _lost(emulator: EmulatorProcess, created: list[str]) -> int:
    """Creates that answered success but whose user is not on the target (read through the test endpoint)."""
    async with httpx.AsyncClient(timeout=60) as http:
        origin = emulator.base_url.split("/scim/", 1)[0]
        state = (await http.get(f"{origin}/emulator/state")).json()
    users = state.get("Users", state.get("users", []))
    present = {u["id"] for u in users} if isinstance(users, list) else set(users)
    return sum(1 for scim_id in created if scim_id not in present)


def part_latency(args: argparse.Namespace, workdir: Path) -> list[Measure]:
    measures: list[Measure] = []
    with emulator_process(workdir, latency_ms=args.latency_ms) as emulator:
        for concurrency in args.concurrency:
            ops = args.ops_per_worker * concurrency
            measure, _ = asyncio.run(
                _creates(emulator, f"{args.latency_ms:g} ms, c={concurrency}", concurrency=concurrency, ops=ops)
            )
            measures.append(measure)
            print(_render(measures[-1:], header=len(measures) == 1), flush=True)
    return measures


def part_limit(args: argparse.Namespace, workdir: Path) -> list[Measure]:
    measures: list[Measure] = []
    for pacing in args.pacing:
        rate = None if pacing == "none" else float(pacing)
        with emulator_process(workdir, latency_ms=args.limit_latency_ms, rate_limit_per_s=args.limit) as emulator:
            label = f"limit {args.limit:g}/s, client {'unpaced' if rate is None else f'{rate:g}/s'}"
            measure, created = asyncio.run(
                _creates(emulator, label, concurrency=args.limit_concurrency, rate=rate, duration_s=args.duration_s)
            )
            measure.lost = asyncio.run(_lost(emulator, created))
            measures.append(measure)
            print(_render(measures[-1:], header=False, limit=args.limit), flush=True)
    return measures


def _render(measures: list[Measure], *, header: bool = True, limit: float | None = None) -> str:
    lines = []
    if header:
        lines.append(
            f"{'run':<34} {'ops':>7} {'wall s':>7} {'ops/s':>7} {'of limit':>8} {'429s':>6} {'requests':>8} "
            f"{'failed':>6} {'lost':>5} {'client CPU ms/op':>16} {'emu CPU':>7}"
        )
    for m in measures:
        share = f"{m.per_s / limit:8.1%}" if limit else f"{'-':>8}"
        lines.append(
            f"{m.label:<34} {m.ops:7,} {m.wall_s:7.1f} {m.per_s:7.1f} {share} {m.rate_limited:6,} {m.requests:8,} "
            f"{m.failed:6} {m.lost:5} {m.client_cpu_s / max(m.ops, 1) * 1000:16.2f} {m.emulator_cpu_s / m.wall_s:6.0%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--ops-per-worker", type=int, default=100, help="creates per worker in part 1")
    parser.add_argument("--limit", type=float, default=200.0, help="the emulator's rate limit, requests/s")
    parser.add_argument("--limit-latency-ms", type=float, default=20.0)
    parser.add_argument("--limit-concurrency", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument(
        "--pacing", nargs="+", default=["none", "200"], help="client pacing per run: none, or requests/s"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-limit", action="store_true")
    args = parser.parse_args(argv)
    # One log line per 429 retry would drown the table; the retries are counted from the emulator's log instead.
    stamina.instrumentation.set_on_retry_hooks([])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scim-limit-") as tmp:
        latency = [] if args.skip_latency else part_latency(args, Path(tmp))
        limited = [] if args.skip_limit else part_limit(args, Path(tmp))
    print()
    print("Throughput at the target's limit — ScimClient creates against the emulator in a subprocess")
    ok = True
    if latency:
        print(_render(latency))
        ratio = latency[-1].per_s / latency[0].per_s if latency[0].per_s else 0.0
        met = ratio >= 20
        ok &= met
        print(
            f"c={args.concurrency[-1]} / c={args.concurrency[0]}: {ratio:.1f}x "
            f"(target ≥ 20x: {'met' if met else 'MISSED'})"
        )
    if limited:
        print(_render(limited, limit=args.limit))
        for m in limited:
            met = m.per_s >= 0.95 * args.limit and m.failed == 0 and m.lost == 0
            ok &= met
            print(
                f"{m.label}: {m.per_s / args.limit:.1%} of the limit, {m.failed} failed, {m.lost} lost "
                f"(target ≥ 95 %, none lost: {'met' if met else 'MISSED'})"
            )
    print("emu CPU = the emulator's CPU time / wall time (near 100 % = the emulator is the bottleneck)")
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"total wall time {time.perf_counter() - started:.1f} s; load average (1/5/15 min) {load} on "
        f"{os.cpu_count()} CPUs (other work on the machine slows every figure)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
