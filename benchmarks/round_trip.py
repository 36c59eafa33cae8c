"""Round trip: how close one `ScimClient` comes to the latency-bound ideal (concurrency / latency), and where the
difference goes — the distribution of the round trips it sees against the emulator's fixed added latency.

The emulator runs in its own process and sleeps ``--latency-ms`` before answering each request; anything above that
in the client's round trip is CPU and queueing, in the client's event loop or the emulator's.

    python benchmarks/round_trip.py                          # 10,000 creates, concurrency 32, 20 ms
    python benchmarks/round_trip.py --ops 5000 --concurrency 8 --latency-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import EmulatorProcess, emulator_process

from scim_pipeline.scim import ScimClient


async def _run(emulator: EmulatorProcess, ops: int, concurrency: int) -> tuple[float, float, list[float]]:
    settings = emulator.settings(concurrency=concurrency)
    round_trips: list[float] = []
    async with ScimClient(settings) as client:
        await client.get_json("/ServiceProviderConfig")  # token and a first connection before the clock starts
        indexes = iter(range(ops))
        run_tag = time.time_ns()

        async def worker() -> None:
            for index in indexes:
                result = await client.create("Users", {"userName": f"rt{run_tag}-{index}"})
                round_trips.append(result.latency_s)

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu, round_trips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="scim-round-trip-") as tmp,
        emulator_process(Path(tmp), latency_ms=args.latency_ms) as emulator,
    ):
        emulator_cpu = emulator.cpu_s()
        wall, cpu, round_trips = asyncio.run(_run(emulator, args.ops, args.concurrency))
        emulator_cpu = emulator.cpu_s() - emulator_cpu
    ideal_rate = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else float("inf")
    quantiles = statistics.quantiles(round_trips, n=100)
    print(
        f"Round trip — {args.ops:,} ScimClient creates at concurrency {args.concurrency} against the emulator "
        f"(added latency {args.latency_ms:g} ms) in a subprocess"
    )
    print(
        f"{'creates/s':>10} {'ideal/s':>8} {'of ideal':>8} {'mean ms':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'client CPU ms/op':>17} {'emu CPU':>8}"
    )
    rate = args.ops / wall
    print(
        f"{rate:10.0f} {ideal_rate:8.0f} {rate / ideal_rate:8.0%} {statistics.mean(round_trips) * 1000:8.1f} "
        f"{quantiles[49] * 1000:7.1f} {quantiles[89] * 1000:7.1f} {quantiles[98] * 1000:7.1f} "
        f"{cpu / args.ops * 1000:17.2f} {emulator_cpu / wall:8.0%}"
    )
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average (1/5/15 min) {load} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
