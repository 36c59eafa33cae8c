"""End to end: the real ``scim-pipeline sync`` onboarding a generated roster into the emulator, then a no-change
cycle and a cycle where 1 % of the users changed — wall time, HTTP requests (from the emulator's request log),
the CLI's CPU time and peak memory; then the same onboarding with 20 ms of latency at concurrency 32, against the
ideal (requests x latency / concurrency).

The emulator runs in its own process (``python -m scim_pipeline.emulator``), and so does the CLI: each process's CPU
time is its own, and the emulator's CPU share of the wall time says when it, not the pipeline, is the bottleneck.

    python benchmarks/end_to_end.py                                  # 5,000 users, 50 groups, 15,000 memberships
    python benchmarks/end_to_end.py --users 100000 --groups 1000 --memberships 300000   # the issue's size
    python benchmarks/end_to_end.py --latency-ms 0                   # skip the 20 ms run

The helpers here (emulator process, request log, roster generator) are shared with ``request_count.py`` and
``throughput_at_limit.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_throughput import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, emulator_command, started_emulator

from scim_pipeline.scim import ConnectionSettings

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- the emulator in a subprocess -----------------------------------------------------------------------------


@dataclass
class EmulatorProcess:
    """A running ``python -m scim_pipeline.emulator`` with its request log in a JSON-lines file."""

    process: subprocess.Popen[str]
    base_url: str
    token_url: str
    log_path: Path
    _log_offset: int = 0

    def cpu_s(self) -> float:
        """CPU seconds the emulator process has used so far (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def take_requests(self) -> list[dict[str, Any]]:
        """The requests logged since the previous call (oldest first)."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def settings(self, *, concurrency: int, rate_limit_per_s: float | None = None) -> ConnectionSettings:
        """Client settings for this emulator (its demo client credentials)."""
        return ConnectionSettings(
            base_url=self.base_url,
            token_url=self.token_url,
            client_id=DEMO_CLIENT_ID,
            client_secret=DEMO_CLIENT_SECRET,
            concurrency=concurrency,
            rate_limit=rate_limit_per_s,
        )

    def env(self) -> dict[str, str]:
        """The SCIM_* variables pointing the pipeline at this emulator."""
        return {
            "SCIM_BASE_URL": self.base_url,
            "SCIM_TOKEN_URL": self.token_url,
            "SCIM_CLIENT_ID": DEMO_CLIENT_ID,
            "SCIM_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        }


@contextlib.contextmanager
def emulator_process(
    workdir: Path,
    *,
    latency_ms: float = 0.0,
    rate_limit_per_s: float | None = None,
    retry_after_s: int = 1,
    page_size_cap: int = 100,
) -> Iterator[EmulatorProcess]:
    """Start the emulator on an ephemeral loopback port; stop it on exit."""
    log_path = workdir / f"requests-{time.monotonic_ns()}.jsonl"
    log_path.touch()
    options = ["--retry-after", str(retry_after_s), "--request-log", str(log_path)]
    if rate_limit_per_s is not None:
        options += ["--rate-limit", str(rate_limit_per_s)]
    with started_emulator(emulator_command(latency_ms, page_size_cap, *options)) as (process, base_url, token_url):
        yield EmulatorProcess(process, base_url, token_url, log_path)


@dataclass
class RequestCounts:
    """HTTP requests by kind, from the emulator's log."""

    token: int = 0
    reads: int = 0
    writes: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    writes_by_type: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.token + self.reads + self.writes

    @property
    def scim(self) -> int:
        return self.reads + self.writes


def count_requests(records: Sequence[dict[str, Any]]) -> RequestCounts:
    counts = RequestCounts()
    for record in records:
        counts.by_status[int(record["status"])] += 1
        if record.get("resource_type") == "token":
            counts.token += 1
            continue
        method = str(record["method"])
        counts.by_method[method] += 1
        if method in WRITE_METHODS:
            counts.writes += 1
            counts.writes_by_type[f"{method} {record.get('resource_type', '')}"] += 1
        else:
            counts.reads += 1
    return counts


# ---- a generated roster ---------------------------------------------------------------------------------------

USER_COLUMNS = (
    "user_name",
    "external_id",
    "given_name",
    "family_name",
    "display_name",
    "email",
    "active",
    "department",
    "title",
    "employee_number",
    "manager",
)


@dataclass(frozen=True)
class RosterShape:
    """What a generated roster holds, and the fewest writes its first onboarding needs."""

    users: int
    groups: int
    memberships: int
    member_chunks: int
    """Σ over groups of ⌈members / chunk⌉: the membership PATCHes of a first onboarding."""

    @property
    def minimal_writes(self) -> int:
        return self.users + self.groups + self.member_chunks


def write_roster(
    folder: Path,
    *,
    users: int,
    groups: int,
    memberships: int,
    member_chunk: int = 100,
    changed_share: float = 0.0,
    seed: int = 7,
) -> RosterShape:
    """Write users.csv, groups.csv and memberships.csv (the sample roster's columns) into ``folder``.

    Memberships are spread evenly: user i belongs to groups (i + k·step) mod G. ``changed_share`` changes the
    title of that share of users (deterministically from ``seed``), so the same call with a share > 0 yields the
    "some users changed" roster of the same people.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    changed = set(rng.sample(range(users), round(users * changed_share))) if changed_share else set()
    with (folder / "users.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(USER_COLUMNS)
        for i in range(users):
            name = f"user{i:07d}"
            title = f"Title {i % 97}" + (" (changed)" if i in changed else "")
            manager = f"user{(i // 50) * 50:07d}" if i % 50 else ""
            writer.writerow(
                (
                    name,
                    f"E{i:07d}",
                    f"Given{i % 1000}",
                    f"Family{i % 3001}",
                    f"Given{i % 1000} Family{i % 3001}",
                    f"{name}@example.com",
                    "true",
                    f"Dept {i % 40}",
                    title,
                    f"{i:07d}",
                    manager,
                )
            )
    with (folder / "groups.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("group_name", "external_id"))
        for g in range(groups):
            writer.writerow((f"Group-{g:05d}", f"G{g:05d}"))
    per_group: Counter[int] = Counter()
    with (folder / "memberships.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("group_name", "user_name"))
        if groups and users:
            per_user = max(1, math.ceil(memberships / users))
            step = max(1, groups // per_user)
            written = 0
            for k in range(per_user):
                for i in range(users):
                    if written == memberships:
                        break
                    g = (i + k * step) % groups
                    writer.writerow((f"Group-{g:05d}", f"user{i:07d}"))
                    per_group[g] += 1
                    written += 1
    chunks = sum(math.ceil(n / member_chunk) for n in per_group.values())
    return RosterShape(users, groups, sum(per_group.values()), chunks)


# ---- the CLI in a subprocess ----------------------------------------------------------------------------------


@dataclass
class CliRun:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    output: str


def run_cli(args: Sequence[str], env: dict[str, str], workdir: Path) -> CliRun:
    """Run ``scim-pipeline ARGS`` (the installed console script) and measure it with ``wait4``."""
    script = Path(sys.executable).with_name("scim-pipeline")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scim_pipeline.cli"]
    out_path = workdir / f"cli-{time.monotonic_ns()}.log"
    with out_path.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen([*command, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return CliRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
        returncode=process.returncode,
        output=out_path.read_text(errors="replace"),
    )


def pipeline_env(emulator: EmulatorProcess, workdir: Path, roster: Path, *, concurrency: int) -> dict[str, str]:
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCIM_")}
    env.update(emulator.env())
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "SCIM_ROSTER": str(roster),
            "SCIM_STATE_URL": f"sqlite:///{workdir / 'state.sqlite'}",
            "SCIM_CONCURRENCY": str(concurrency),
        }
    )
    return env


# ---- the benchmark --------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    wall_s: float
    requests: RequestCounts
    cli: CliRun
    emulator_cpu_s: float
    ideal_s: float | None = None


def _cycle(
    scenario: str, emulator: EmulatorProcess, env: dict[str, str], workdir: Path, *, latency_ms: float, concurrency: int
) -> Row:
    emulator.take_requests()
    emulator_cpu = emulator.cpu_s()
    cli = run_cli(["sync"], env, workdir)
    emulator_cpu = emulator.cpu_s() - emulator_cpu
    time.sleep(0.2)  # the log is line-buffered; let the last lines land
    counts = count_requests(emulator.take_requests())
    if cli.returncode != 0:
        print(f"[{scenario}] scim-pipeline sync exited {cli.returncode}:\n{cli.output[-3000:]}", file=sys.stderr)
    ideal = counts.total * latency_ms / 1000 / concurrency if latency_ms else None
    return Row(scenario, cli.wall_s, counts, cli, emulator_cpu, ideal)


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="scim-e2e-") as tmp:
        root = Path(tmp)
        roster = root / "roster"
        shape = write_roster(roster, users=args.users, groups=args.groups, memberships=args.memberships)
        print(
            f"roster: {shape.users:,} users, {shape.groups:,} groups, {shape.memberships:,} memberships "
            f"(minimal onboarding writes U + G + Σ⌈M_g/100⌉ = {shape.minimal_writes:,})",
            flush=True,
        )
        for latency in args.latency_ms:
            concurrency = args.concurrency if latency else args.concurrency_0ms
            workdir = root / f"latency-{latency:g}"
            workdir.mkdir()
            with emulator_process(workdir, latency_ms=latency) as emulator:
                env = pipeline_env(emulator, workdir, roster, concurrency=concurrency)
                label = f"{latency:g} ms, c={concurrency}"
                write_roster(roster, users=args.users, groups=args.groups, memberships=args.memberships)
                rows.append(
                    _cycle(f"onboarding ({label})", emulator, env, workdir, latency_ms=latency, concurrency=concurrency)
                )
                print(_render(rows[-1:], header=not rows[:-1]), flush=True)
                if latency == 0 or args.all_cycles:
                    rows.append(
                        _cycle(
                            f"no change ({label})", emulator, env, workdir, latency_ms=latency, concurrency=concurrency
                        )
                    )
                    print(_render(rows[-1:], header=False), flush=True)
                    write_roster(
                        roster,
                        users=args.users,
                        groups=args.groups,
                        memberships=args.memberships,
                        changed_share=0.01,
                    )
                    rows.append(
                        _cycle(
                            f"1 % changed ({label})",
                            emulator,
                            env,
                            workdir,
                            latency_ms=latency,
                            concurrency=concurrency,
                        )
                    )
                    print(_render(rows[-1:], header=False), flush=True)
    return rows


def _render(rows: list[Row], *, header: bool = True) -> str:
    lines = []
    if header:
        lines.append(
            f"{'cycle':<28} {'wall s':>8} {'ideal s':>8} {'requests':>9} {'writes':>8} {'reads':>7} {'token':>5} "
            f"{'req/s':>7} {'CLI CPU s':>9} {'peak MiB':>8} {'emu CPU':>7}  result"
        )
    for row in rows:
        rate = row.requests.total / row.wall_s if row.wall_s else 0.0
        ideal = f"{row.ideal_s:8.1f}" if row.ideal_s is not None else f"{'-':>8}"
        lines.append(
            f"{row.scenario:<28} {row.wall_s:8.1f} {ideal} {row.requests.total:9,} {row.requests.writes:8,} "
            f"{row.requests.reads:7,} {row.requests.token:5} {rate:7.0f} {row.cli.cpu_s:9.1f} "
            f"{row.cli.peak_rss_mib:8.0f} {row.emulator_cpu_s / row.wall_s:6.0%}  "
            f"{'OK' if row.cli.returncode == 0 else f'exit {row.cli.returncode}'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--memberships", type=int, default=15_000)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--concurrency", type=int, default=32, help="SCIM_CONCURRENCY of the latency runs")
    parser.add_argument("--concurrency-0ms", type=int, default=16, help="SCIM_CONCURRENCY at 0 ms (the default)")
    parser.add_argument("--all-cycles", action="store_true", help="also run the no-change and 1 %% cycles with latency")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args)
    print()
    print("End to end — `scim-pipeline sync` (Dagster, in-process executor) against the emulator in a subprocess")
    print(_render(rows))
    print(
        "requests = every HTTP request the emulator logged (token included); ideal = requests x latency / "
        "concurrency; emu CPU = the emulator's CPU time / wall time (near 100 % = the emulator is the bottleneck)"
    )
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"total wall time {time.perf_counter() - started:.1f} s; load average (1/5/15 min) {load} on "
        f"{os.cpu_count()} CPUs (other work on the machine slows every figure)"
    )
    return 0 if all(row.cli.returncode == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
