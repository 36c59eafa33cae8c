"""What a listing of 1,000,000 users costs the client in memory: minimal user dicts as a ListResponse carries
them (id, userName, schemas), and the set of ids the pager keeps to detect repeated pages (tracemalloc).

    python benchmarks/listing_memory.py [--users 1000000]
"""

from __future__ import annotations

import argparse
import tracemalloc
import uuid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    count = parser.parse_args().users
    tracemalloc.start()
    users = [
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": uuid.uuid4().hex,
            "userName": f"user{i:07d}@example.test",
            "active": True,
        }
        for i in range(count)
    ]
    seen = {user["id"] for user in users}
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{count:,} minimal users + id set: {current / 2**20:,.0f} MiB held, peak {peak / 2**20:,.0f} MiB")
    print(f"per user: {current / count:,.0f} bytes")
    del users, seen


if __name__ == "__main__":
    main()
