"""SCIM client throughput: operations per second (creates and gets) at concurrency 1, 8 and 32
against a local server with 0 ms and 20 ms of added latency, and the client's CPU time per
operation.

The server runs in a subprocess (the Delinea emulator, ``python -m scim_pipeline.emulator``; or
``scim2-server`` with ``--server scim2-server``, which has no latency knob and no OAuth endpoint),
so ``time.process_time()`` of this process measures the client alone.

    python benchmarks/client_throughput.py                  # default run, well under 2 minutes
    python benchmarks/client_throughput.py --ops 2000 --concurrency 1 8 32 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from scim_pipeline.scim import ConnectionSettings, ScimClient, ScimPipelineError

DEMO_CLIENT_ID = "scim-demo"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105 - the emulator's published demo credential


@dataclass
class Cell:
    latency_ms: float
    concurrency: int
    creates_per_s: float
    gets_per_s: float
    cpu_ms_per_create: float
    cpu_ms_per_get: float
    raw_cpu_ms_per_get: float
    """The same gets through a bare httpx.AsyncClient: the HTTP stack's share of the cost."""
    errors: int


def emulator_command(latency_ms: float, page_size_cap: int, *options: str) -> list[str]:
    """``python -m scim_pipeline.emulator`` on an ephemeral loopback port, with the given knobs."""
    return [
        sys.executable,
        "-u",
        "-m",
        "scim_pipeline.emulator",
        "--port",
        "0",
        "--latency-ms",
        str(latency_ms),
        "--page-size-cap",
        str(page_size_cap),
        *options,
    ]


@contextlib.contextmanager
def started_emulator(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """Run an emulator command; yield (process, base URL, token URL) once it listens; stop it on exit."""
    with _server_process(command) as process:
        base_url = _wait_for(process.stdout, r"SCIM base URL:\s+(\S+)")
        token_url = _wait_for(process.stdout, r"token URL:\s+(\S+)")
        yield process, base_url, token_url


@contextlib.contextmanager
def emulator_subprocess(latency_ms: float, page_size_cap: int) -> Iterator[tuple[str, str]]:
    """Run the emulator in its own process; yield (base URL, token URL)."""
    with started_emulator(emulator_command(latency_ms, page_size_cap)) as (_, base_url, token_url):
        yield base_url, token_url


@contextlib.contextmanager
def scim2_server_subprocess() -> Iterator[tuple[str, str]]:
    """Run scim2-server (no OAuth: requests go without a token); yield (base URL, "")."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["scim2-server", "--hostname", "127.0.0.1", "--port", str(port)]
    with _server_process(command) as process:
        base_url = _wait_for(process.stdout, r"Serving SCIM on\s+(\S+)")
        yield base_url, ""


@contextlib.contextmanager
def _server_process(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(output: Any, pattern: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = output.readline()
        if not line:
            raise RuntimeError("the server exited before it was ready")
        if match := re.search(pattern, line):
            return match.group(1)
    raise RuntimeError(f"the server did not print {pattern!r} in time")


async def _run_cell(settings: ConnectionSettings, latency_ms: float, concurrency: int, ops: int) -> Cell:
    run = uuid.uuid4().hex[:8]
    errors = 0
    async with ScimClient(settings.model_copy(update={"concurrency": concurrency})) as client:
        await client.get_json("/ServiceProviderConfig")  # token and connection warm-up

        async def create(index: int) -> str | None:
            nonlocal errors
            try:
                result = await client.create(
                    "Users",
                    {
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": f"bench-{run}-{index}",
                    },
                )
            except ScimPipelineError:  # a benchmark counts failures, it does not stop
                errors += 1
                return None
            return result.scim_id

        async def get(scim_id: str) -> None:
            nonlocal errors
            try:
                await client.get("Users", scim_id)
            except ScimPipelineError:
                errors += 1

        cpu, wall = time.process_time(), time.perf_counter()
        # Every operation is its own caller; the client's semaphore holds the concurrency.
        ids = [i for i in await asyncio.gather(*(create(i) for i in range(ops))) if i]
        create_wall, create_cpu = time.perf_counter() - wall, time.process_time() - cpu

        targets = [ids[i % len(ids)] for i in range(ops)] if ids else []
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(get(scim_id) for scim_id in targets))
        get_wall, get_cpu = time.perf_counter() - wall, time.process_time() - cpu
        raw_cpu = await _raw_gets(client, settings, targets, concurrency)
    return Cell(
        latency_ms=latency_ms,
        concurrency=concurrency,
        creates_per_s=ops / create_wall,
        gets_per_s=len(targets) / get_wall if targets else 0.0,
        cpu_ms_per_create=create_cpu / ops * 1000,
        cpu_ms_per_get=get_cpu / max(len(targets), 1) * 1000,
        raw_cpu_ms_per_get=raw_cpu / max(len(targets), 1) * 1000,
        errors=errors,
    )


async def _raw_gets(client: ScimClient, settings: ConnectionSettings, ids: list[str], concurrency: int) -> float:
    """CPU seconds of the same gets through a bare httpx client (no retries, no profile, no pool
    bookkeeping of ours): what any Python client pays on this machine."""
    headers = {"Authorization": f"Bearer {await client.auth.token()}"} if client.auth else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    bound = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits) as http:
        await http.get(f"{settings.base_url}/ServiceProviderConfig")

        async def get(scim_id: str) -> None:
            async with bound:
                await http.get(f"{settings.base_url}/Users/{scim_id}")

        cpu = time.process_time()
        await asyncio.gather(*(get(scim_id) for scim_id in ids))
        return time.process_time() - cpu


def _render(cells: list[Cell], latencies: list[float], concurrencies: list[int]) -> str:
    by_key = {(c.latency_ms, c.concurrency): c for c in cells}
    group = "creates/s   gets/s  CPU ms/create  CPU ms/get  (bare httpx)"
    header = "concurrency | " + " | ".join(f"{f'latency {latency:g} ms':^{len(group)}}" for latency in latencies)
    lines = [header, "            | " + " | ".join(group for _ in latencies)]
    lines.append("-" * len(lines[1]))
    for concurrency in concurrencies:
        parts = []
        for latency in latencies:
            cell = by_key[(latency, concurrency)]
            parts.append(
                f"{cell.creates_per_s:9.0f} {cell.gets_per_s:8.0f} "
                f"{cell.cpu_ms_per_create:14.2f} {cell.cpu_ms_per_get:11.2f} {cell.raw_cpu_ms_per_get:13.2f}"
            )
        lines.append(f"{concurrency:>11} | " + " | ".join(parts))
    errors = sum(c.errors for c in cells)
    if errors:
        lines.append(f"({errors} operations failed)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300, help="creates (and gets) per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--server", choices=["emulator", "scim2-server"], default="emulator")
    parser.add_argument("--page-size-cap", type=int, default=100)
    args = parser.parse_args(argv)

    latencies = args.latency_ms if args.server == "emulator" else [0.0]
    cells: list[Cell] = []
    started = time.perf_counter()
    for latency in latencies:
        server = (
            emulator_subprocess(latency, args.page_size_cap) if args.server == "emulator" else scim2_server_subprocess()
        )
        with server as (base_url, token_url):
            if token_url:
                settings = ConnectionSettings(
                    base_url=base_url,
                    token_url=token_url,
                    client_id=DEMO_CLIENT_ID,
                    client_secret=DEMO_CLIENT_SECRET,
                    profile="delinea",
                )
            else:
                settings = ConnectionSettings(base_url=base_url, profile="rfc7644")
            for concurrency in args.concurrency:
                cells.append(asyncio.run(_run_cell(settings, latency, concurrency, args.ops)))
    print(
        f"SCIM client throughput — server: {args.server} in a subprocess on 127.0.0.1; "
        f"{args.ops} creates then {args.ops} gets per cell; CPU = this (client) process only"
    )
    print(_render(cells, latencies, args.concurrency))
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
