"""Throughput at the target's rate limit: onboarding creates against the emulator (in a subprocess) limiting to a
given rate, announced or not, and how fast the client finds that rate.

For each limit (25, 100 and 400 requests/s by default), each onboarding size (2,000 and 20,000 creates) and each
announcement (default none: the limit is found from 429s only; ietf: the answers carry ``RateLimit-Policy``/
``RateLimit``), a fresh emulator takes the creates from

- **adaptive** — ``ScimClient`` with its DEFAULT settings (adaptive pacing, no ``SCIM_RATE_LIMIT``);
- **fixed-rate** — the defaults plus ``SCIM_RATE_LIMIT`` set to the limit (``--clients``);
- **unpaced** — the defaults with adaptive pacing off (429s and Retry-After only; ``--clients``).

Reported per run: failed operations (target 0), the achieved create rate over the write phase as a share of the
limit (target ≥ 0.95), 429s as a share of the SCIM requests (target ≤ 3 %, ≤ 0.5 % when announced), the seconds from
the first request until the create rate holds at 0.9 of the limit (every 2-s window from then on, while a window's
worth of creates remains; target about 5 s), the wall time against the ideal N/R, created-but-missing users (lost),
client CPU per create and the emulator's CPU share. The emulator's bucket holds one second of requests and is full
when the write phase starts, so a client can exceed the limit by that burst.

    python benchmarks/throughput_at_limit.py                   # every size: about 20 minutes (20,000 at 25/s: 800 s)
    python benchmarks/throughput_at_limit.py --users 2000      # about 2 minutes
    python benchmarks/throughput_at_limit.py --limits 100 --users 500 --latency-ms 20 --clients adaptive fixed-rate
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_throughput import emulator_command, started_emulator
from end_to_end import EmulatorProcess, count_requests

from scim_pipeline.emulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from scim_pipeline.scim import ConnectionSettings, ScimClient, ScimPipelineError, ScimResult

CLIENTS = ("adaptive", "fixed-rate", "unpaced")


HOLD_WINDOW_S = 2.0
"""The create rate is judged over windows this long (at 25/s one second holds 25 creates: too coarse)."""
HOLD_SHARE = 0.9


@dataclass
class Run:
    limit: float
    announce: str
    client: str
    users: int
    latency_ms: float
    creates: int
    failed: int
    wall_s: float
    requests: int
    throttled: int
    lost: int
    client_cpu_s: float
    emulator_cpu_s: float
    hold_s: float | None
    """Seconds from the first request until the create rate holds at ``HOLD_SHARE`` of the limit (None: never)."""
    first_s: float | None
    """Seconds from the first request until a window first reached ``HOLD_SHARE`` of the limit (None: never)."""
    lowest_share: float | None
    """The slowest window after that, as a share of the limit: a dip after the limit was found."""

    @property
    def ideal_s(self) -> float:
        return self.users / self.limit

    @property
    def share_of_limit(self) -> float:
        return self.creates / self.wall_s / self.limit if self.wall_s else 0.0

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    def met(self) -> bool:
        ceiling = 0.005 if self.announce != "none" else 0.03
        return self.failed == 0 and self.lost == 0 and self.share_of_limit >= 0.95 and self.throttled_share <= ceiling


@contextlib.contextmanager
def limited_emulator(workdir: Path, limit: float, announce: str, latency_ms: float) -> Iterator[EmulatorProcess]:
    log_path = workdir / f"requests-{time.monotonic_ns()}.jsonl"
    log_path.touch()
    options = ["--rate-limit", str(limit), "--announce-rate-limit", announce, "--request-log", str(log_path)]
    with started_emulator(emulator_command(latency_ms, 100, *options)) as (process, base_url, token_url):
        yield EmulatorProcess(process, base_url, token_url, log_path)


def client_settings(emulator: EmulatorProcess, client: str, limit: float) -> ConnectionSettings:
    """The client's DEFAULT settings, but for what makes it ``fixed-rate`` or ``unpaced``."""
    extra: dict[str, object] = {}
    if client == "fixed-rate":
        extra["rate_limit"] = limit
    elif client == "unpaced":
        extra["adaptive_pacing"] = False
    return ConnectionSettings(
        base_url=emulator.base_url,
        token_url=emulator.token_url,
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,
        **extra,
    )


def window_shares(done_at: list[float], limit: float) -> list[tuple[float, float]]:
    """Each ``HOLD_WINDOW_S`` window, one starting every 0.1 s from the first request, and the creates completed in it
    as a share of the limit — judged while a window's worth of creates was still to come (the tail of an onboarding
    is demand running out, not pacing). (``tests/scim/rate_limited_target.py`` judges the same.)"""
    done = sorted(done_at)
    if not done:
        return []
    judged_until = done[max(0, len(done) - 1 - round(limit * HOLD_WINDOW_S))]
    full = limit * HOLD_WINDOW_S
    return [
        (start, (bisect.bisect_left(done, start + HOLD_WINDOW_S) - bisect.bisect_left(done, start)) / full)
        for start in (step / 10 for step in range(int((judged_until - HOLD_WINDOW_S) * 10) + 1))
    ]


def hold_s(shares: list[tuple[float, float]]) -> float | None:
    """Seconds from the first request until every window holds ``HOLD_SHARE`` of the limit; ``None`` if never."""
    held: float | None = None
    for start, share in reversed(shares):
        if share < HOLD_SHARE:
            break
        held = start
    return held


def found_and_lowest(shares: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """When a window first held ``HOLD_SHARE`` of the limit (the limit found), and the slowest window after that."""
    first = next((start for start, share in shares if share >= HOLD_SHARE), None)
    if first is None:
        return None, None
    return first, min(share for start, share in shares if start >= first)


async def onboard(
    emulator: EmulatorProcess, client: str, limit: float, announce: str, users: int, latency_ms: float
) -> Run:
    batch = uuid.uuid4().hex[:8]
    done_at: list[float] = []
    async with ScimClient(client_settings(emulator, client, limit)) as scim:
        await scim.get_json("/ServiceProviderConfig")  # the token and a first connection
        await asyncio.sleep(1.1)  # the server's bucket is full again when the write phase starts
        emulator.take_requests()
        emulator_cpu, cpu, started = emulator.cpu_s(), time.process_time(), time.perf_counter()

        async def create(index: int) -> ScimResult:
            result = await scim.create("Users", {"userName": f"onboard-{batch}-{index:05d}", "active": True})
            done_at.append(time.perf_counter() - started)
            return result

        outcomes = await asyncio.gather(*(create(index) for index in range(users)), return_exceptions=True)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        emulator_cpu = emulator.cpu_s() - emulator_cpu
    await asyncio.sleep(0.2)
    counts = count_requests(emulator.take_requests())
    unexpected = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, ScimPipelineError)]
    if unexpected:
        raise unexpected[0]
    created = [o.scim_id for o in outcomes if not isinstance(o, BaseException) and o.scim_id]
    shares = window_shares(done_at, limit)
    found, lowest = found_and_lowest(shares)
    return Run(
        limit=limit,
        announce=announce,
        client=client,
        users=users,
        latency_ms=latency_ms,
        creates=len(created),
        failed=sum(1 for o in outcomes if isinstance(o, BaseException)),
        wall_s=wall,
        requests=counts.scim,
        throttled=counts.by_status[429],
        lost=await _lost(emulator, created),
        client_cpu_s=cpu,
        emulator_cpu_s=emulator_cpu,
        hold_s=hold_s(shares),
        first_s=found,
        lowest_share=lowest,
    )


async def _lost(emulator: EmulatorProcess, created: list[str]) -> int:
    """Creates that answered success but whose user is not on the target (read through the test endpoint)."""
    async with httpx.AsyncClient(timeout=60) as http:
        origin = emulator.base_url.split("/scim/", 1)[0]
        state = (await http.get(f"{origin}/emulator/state")).json()
    users = state.get("Users", state.get("users", []))
    present = {u["id"] for u in users} if isinstance(users, list) else set(users)
    return sum(1 for scim_id in created if scim_id not in present)


HEADER = (
    f"{'limit/s':>7} {'users':>6} {'announced':>9} {'client':>10} {'failed':>6} {'wall s':>7} {'N/R s':>6} "
    f"{'of limit':>8} {'429s':>6} {'429 share':>9} {'found s':>7} {'lowest':>6} {'s to 0.9':>8} {'lost':>4} "
    f"{'CPU ms/op':>9} {'emu CPU':>7} "
    f"{'met':>4}"
)


def render(run: Run) -> str:
    held = f"{run.hold_s:8.1f}" if run.hold_s is not None else f"{'never':>8}"
    found = f"{run.first_s:7.1f}" if run.first_s is not None else f"{'never':>7}"
    lowest = f"{run.lowest_share:6.0%}" if run.lowest_share is not None else f"{'-':>6}"
    return (
        f"{run.limit:7g} {run.users:6,} {run.announce:>9} {run.client:>10} {run.failed:6} {run.wall_s:7.1f} "
        f"{run.ideal_s:6.1f} {run.share_of_limit:8.1%} {run.throttled:6,} {run.throttled_share:9.2%} {found} {lowest} "
        f"{held} "
        f"{run.lost:4} {run.client_cpu_s / max(run.creates, 1) * 1000:9.2f} {run.emulator_cpu_s / run.wall_s:7.0%} "
        f"{'yes' if run.met() else 'no':>4}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", type=float, nargs="+", default=[25.0, 100.0, 400.0])
    parser.add_argument("--users", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--announce", nargs="+", default=["none"], choices=["none", "x-ratelimit", "ietf"])
    parser.add_argument("--clients", nargs="+", default=["adaptive"], choices=CLIENTS)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency the emulator adds to each request")
    args = parser.parse_args(argv)
    # The client logs each retry at INFO on its own logger: silenced here, the 429s are counted from the emulator.
    logging.getLogger("scim_pipeline.scim.retries").setLevel(logging.WARNING)
    started = time.perf_counter()
    runs: list[Run] = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="scim-limit-") as tmp:
        for users in args.users:
            for limit in args.limits:
                for announce in args.announce:
                    for client in args.clients:
                        with limited_emulator(Path(tmp), limit, announce, args.latency_ms) as emulator:
                            run = asyncio.run(onboard(emulator, client, limit, announce, users, args.latency_ms))
                        runs.append(run)
                        print(render(run), flush=True)
    print()
    print(
        f"Onboarding creates against the emulator's rate limit, {args.latency_ms:g} ms added latency (targets for the "
        "adaptive client: 0 failed, ≥ 95 % of the limit, 429s ≤ 3 % of requests, ≤ 0.5 % when announced; "
        f"'found s': from the first request until a {HOLD_WINDOW_S:g}-s window first holds 0.9 of the limit; "
        f"'lowest': the slowest {HOLD_WINDOW_S:g}-s window after that; 's to 0.9': until every {HOLD_WINDOW_S:g}-s "
        "window holds 0.9 of the limit)"
    )
    print(HEADER)
    for run in runs:
        print(render(run))
    adaptive = [run for run in runs if run.client == "adaptive"]
    ok = all(run.met() for run in adaptive)
    print(f"adaptive client (default settings): {'all targets met' if ok else 'targets MISSED'}")
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"total wall time {time.perf_counter() - started:.1f} s; load average (1/5/15 min) {load} on "
        f"{os.cpu_count()} CPUs (other work on the machine slows every figure)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
