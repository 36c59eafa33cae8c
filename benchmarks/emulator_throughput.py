"""How fast the emulator alone answers: requests/s for create, get, patch and list.

The emulator runs in its own process (``python -m scim_pipeline.emulator``) and is driven from this one
by stdlib ``http.client`` over keep-alive connections, so the figures are the emulator's, not those of an
async HTTP client sharing its interpreter. ``--clients N`` runs N client processes in parallel.

    python benchmarks/emulator_throughput.py --users 2000 [--db /tmp/bench.db] [--clients 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextmanager
def emulator_process(db: str | None, page_size_cap: int) -> Iterator[tuple[str, int, int]]:
    command = [
        sys.executable,
        "-m",
        "scim_pipeline.emulator",
        "--port",
        "0",
        "--page-size-cap",
        str(page_size_cap),
    ]
    if db:
        command += ["--db", db]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "SCIM base URL:" in line:
                url = urllib.parse.urlsplit(line.split("SCIM base URL:")[1].strip())
                assert url.hostname is not None
                assert url.port is not None
                yield url.hostname, url.port, process.pid
                break
        else:
            raise RuntimeError("the emulator did not start")
    finally:
        process.terminate()
        process.wait(timeout=10)


class Connection:
    """One keep-alive connection speaking JSON to the emulator."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.http = http.client.HTTPConnection(host, port)
        self.headers = {"Content-Type": "application/scim+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        self.http.request(method, path, body=payload, headers=self.headers)
        response = self.http.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)


def fetch_token(host: str, port: int) -> str:
    connection = http.client.HTTPConnection(host, port)
    form = "grant_type=client_credentials&client_id=scim-demo&client_secret=demo-secret"
    connection.request(
        "POST",
        "/identity/api/oauth2/token/xpmplatform",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return str(json.loads(connection.getresponse().read())["access_token"])


Results = dict[str, tuple[float, float]]
"""Per operation: (requests/s seen by the client, emulator CPU seconds per request)."""


def client_run(host: str, port: int, pid: int, token: str, worker: int, users: int, barrier: Any, out: Any) -> None:
    """One client process; every phase starts and ends together in all clients (``barrier``), so
    the emulator's CPU time over a phase is divided by every request of that phase."""
    scim = Connection(host, port, token)
    ids: list[str] = []
    results: Results = {}
    clients = barrier.parties

    def timed(label: str, count: int, action: Callable[[int], None], pid: int) -> None:
        barrier.wait()
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        for index in range(count):
            action(index)
        elapsed = time.perf_counter() - started
        barrier.wait()
        results[label] = (count / elapsed, (cpu_seconds(pid) - cpu_before) / (count * clients))

    def create(index: int) -> None:
        status, user = scim.call(
            "POST",
            "/scim/v2/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": f"w{worker}-user{index}@example.org",
                "name": {"givenName": "Bench", "familyName": f"User {index}"},
                "emails": [{"type": "work", "value": f"w{worker}-user{index}@example.org"}],
                "active": True,
            },
        )
        assert status == 201, user
        ids.append(user["id"])

    def get(index: int) -> None:
        status, _ = scim.call("GET", f"/scim/v2/Users/{ids[index]}")
        assert status == 200

    def find(index: int) -> None:
        query = urllib.parse.quote(f'userName eq "w{worker}-user{index}@example.org"')
        status, found = scim.call("GET", f"/scim/v2/Users?filter={query}")
        assert status == 200
        assert found["totalResults"] == 1

    def patch(index: int) -> None:
        body = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "name.givenName", "value": f"P{index}"}],
        }
        status, _ = scim.call("PATCH", f"/scim/v2/Users/{ids[index]}", body)
        assert status == 200

    timed("create", users, create, pid)
    timed("get", users, get, pid)
    timed("filter userName eq", users, find, pid)
    timed("patch", users, patch, pid)

    status, group = scim.call("POST", "/scim/v2/Groups", {"displayName": f"bench-{worker}"})
    assert status == 201
    chunks = [ids[start : start + 100] for start in range(0, len(ids), 100)]

    def add_members(index: int) -> None:
        body = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": i} for i in chunks[index]]}],
        }
        status, _ = scim.call("PATCH", f"/scim/v2/Groups/{group['id']}", body)
        assert status == 204

    timed("patch +100 members", len(chunks), add_members, pid)

    pages = max(1, users // 100)

    def page(index: int) -> None:
        status, listing = scim.call("GET", f"/scim/v2/Users?startIndex={1 + index * 100}&count=100")
        assert status == 200
        assert listing["itemsPerPage"] == 100

    timed("list page of 100", pages, page, pid)
    out.put(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="users created per client")
    parser.add_argument("--clients", type=int, default=1, help="client processes in parallel")
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    parser.add_argument("--memory", action="store_true", help="keep the emulator's state in memory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        db = None if args.memory else (args.db or str(Path(scratch) / "bench.db"))
        with emulator_process(db, page_size_cap=100) as (host, port, pid):
            token = fetch_token(host, port)
            barrier = multiprocessing.Barrier(args.clients)
            out: multiprocessing.Queue[Results] = multiprocessing.Queue()
            workers = [
                multiprocessing.Process(
                    target=client_run, args=(host, port, pid, token, worker, args.users, barrier, out)
                )
                for worker in range(args.clients)
            ]
            started = time.perf_counter()
            for process in workers:
                process.start()
            per_client = [out.get() for _ in workers]
            for process in workers:
                process.join()
            wall = time.perf_counter() - started

    state = "memory" if db is None else "SQLite file (WAL)"
    print(f"emulator alone, {args.clients} client process(es) x {args.users} users, state in {state}")
    print(f"  {'operation':<20} {'seen by client':>16} {'emulator CPU/request':>22} {'capacity of one core':>22}")
    for label in per_client[0]:
        rate = sum(results[label][0] for results in per_client)
        cpu = per_client[0][label][1]
        capacity = f"{1 / cpu:13.0f} req/s" if cpu > 0 else f"{'n/a':>19}"
        print(f"  {label:<20} {rate:10.0f} req/s {cpu * 1000:17.2f} ms {capacity:>22}")
    print("  (client-side figures include the client and whatever else the machine runs;")
    print("   CPU/request is the emulator's own cost, the figure that bounds a benchmark using it)")
    print(f"  wall time {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
