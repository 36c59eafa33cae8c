"""The audit queries a reviewer runs (docs/audit.md), timed on 1,000,000 audit rows, on SQLite and on PostgreSQL.

    python benchmarks/audit_queries.py                          # 1,000,000 rows, both databases
    python benchmarks/audit_queries.py --rows 100000 --databases sqlite
    python benchmarks/audit_queries.py --postgres-url postgresql+psycopg://me@127.0.0.1:5432/bench

The trail is written through ``ProvisioningState.apply`` in batches, as the executor writes it: 200 runs of 5,000
calls over 90 days, 100,000 people, 2 % failed calls (HTTP 400, 409, 429, 500, 503). Without ``--postgres-url`` a
throw-away PostgreSQL cluster is started from Debian's binaries (tests/postgres.py) on 127.0.0.1. Each query is run
once to warm the cache, then ``--repeat`` times; the median is printed with the number of rows it returned, and
``--explain`` prints each database's plan (which index it used).

These machines have 2 noisy cores: compare orders of magnitude, not the last digit.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scim_pipeline.sync.state import AuditRecord, ProvisioningState, StateBatch

RUNS = 200
PEOPLE = 100_000
DAYS = 90
FAILED_STATUSES = (400, 409, 429, 500, 503)
OPERATIONS = ("update", "update", "update", "create", "disable", "add_members")
NOW = 1_796_000_000.0  # a fixed "now", so every run of the benchmark asks the same questions


def person(index: int) -> str:
    return f"user{index:06d}@example.com"


def run_id(index: int) -> str:
    return f"run-{index:04d}"


def load(store: ProvisioningState, rows: int) -> float:
    """Write ``rows`` audit records; return the seconds it took."""
    per_run = max(1, rows // RUNS)
    started = time.perf_counter()
    batch = StateBatch()
    for i in range(rows):
        run = min(i // per_run, RUNS - 1)
        at = NOW - DAYS * 86400 + (i / rows) * DAYS * 86400
        failed = i % 50 == 7
        batch.audit.append(
            AuditRecord(
                resource_type="Groups" if i % 10 == 9 else "Users",
                operation=OPERATIONS[i % len(OPERATIONS)],
                key=person((i * 7919) % PEOPLE),
                outcome="failed" if failed else "ok",
                scim_id=f"id-{i % PEOPLE}",
                http_status=FAILED_STATUSES[(i // 50) % len(FAILED_STATUSES)] if failed else 200,
                latency_ms=12.5,
                attempts=1,
                error="HTTP error (detail masked)" if failed else None,
                run_id=run_id(run),
                partition=f"{run % 16:03d}",
                at=at,
            )
        )
        if len(batch.audit) == 20_000:
            store.apply(batch)
            batch = StateBatch()
    store.apply(batch)
    return time.perf_counter() - started


SQL_QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "failures by HTTP status, last 30 days (SQL)": (
        "SELECT http_status, count(*) FROM audit WHERE outcome = 'failed' AND at >= :since "
        "GROUP BY http_status ORDER BY count(*) DESC",
        {"since": NOW - 30 * 86400},
    ),
    "people with the most failed calls, last 7 days (SQL)": (
        "SELECT key, count(*) AS failures FROM audit WHERE outcome = 'failed' AND at >= :since "
        "GROUP BY key ORDER BY failures DESC, key LIMIT 10",
        {"since": NOW - 7 * 86400},
    ),
    "outcomes of one run (SQL)": (
        "SELECT outcome, count(*) FROM audit WHERE run_id = :run GROUP BY outcome",
        {"run": run_id(RUNS - 1)},
    ),
    "everything one person's calls did (SQL)": (
        "SELECT at, run_id, operation, outcome, http_status FROM audit WHERE key = :key ORDER BY at",
        {"key": person(4242)},
    ),
}


def method_queries(store: ProvisioningState) -> dict[str, Callable[[], int]]:
    return {
        "audit_query(key=person)": lambda: len(store.audit_query(key=person(4242))),
        "audit(run_id)": lambda: len(store.audit(run_id(RUNS - 1))),
        "audit_query(since, until) one hour": lambda: len(
            store.audit_query(since=NOW - 3600 * 30, until=NOW - 3600 * 29)
        ),
        "audit_query(failed=True, since=7 days)": lambda: len(store.audit_query(failed=True, since=NOW - 7 * 86400)),
        "audit_query(failed=True, http_status=429)": lambda: len(store.audit_query(failed=True, http_status=429)),
        "audit_query(limit=100) newest": lambda: len(store.audit_query(limit=100)),
    }


def timed(action: Callable[[], int], repeat: int) -> tuple[float, int]:
    found = action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def explain(engine: sa.Engine, sql: str, params: dict[str, Any]) -> str:
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.execute(sa.text(prefix + sql), params).all()
    return " | ".join(str(row[-1]) for row in rows)


def bench(name: str, url: str, rows: int, repeat: int, show_plans: bool) -> None:
    with ProvisioningState.open(url) as store:
        seconds = load(store, rows)
        print(f"\n{name}: wrote {rows:,} audit rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE audit"))
        for label, action in method_queries(store).items():
            median, found = timed(action, repeat)
            print(f"  {label:<52} {median * 1000:9.1f} ms  {found:>7,} rows")
        for label, (sql, params) in SQL_QUERIES.items():

            def run(sql: str = sql, params: dict[str, Any] = params) -> int:
                with engine.connect() as conn:
                    return len(conn.execute(sa.text(sql), params).all())

            median, found = timed(run, repeat)
            print(f"  {label:<52} {median * 1000:9.1f} ms  {found:>7,} rows")
            if show_plans:
                print(f"      plan: {explain(engine, sql, params)}")
        engine.dispose()


@contextlib.contextmanager
def postgres_database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.postgres import running_postgres

    with running_postgres() as server:
        yield server.url(server.create_database())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database (default: a throw-away local cluster)")
    parser.add_argument("--explain", action="store_true", help="print each SQL query's plan")
    args = parser.parse_args(argv)
    if "sqlite" in args.databases:
        with tempfile.TemporaryDirectory() as folder:
            bench("SQLite", f"sqlite:///{Path(folder) / 'state.sqlite'}", args.rows, args.repeat, args.explain)
    if "postgresql" in args.databases:
        with postgres_database(args.postgres_url) as url:
            bench("PostgreSQL", url, args.rows, args.repeat, args.explain)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
