"""Faithful, bounded index pagination (RFC 7644 §3.4.2.4: 1-based ``startIndex``, ``count``).

A listing is read page by page and stops, with a :class:`~scim_pipeline.scim.PaginationError` naming the paging
and the setting, as soon as it cannot be trusted or would not end:

* a ``totalResults`` that needs more pages than ``SCIM_MAX_PAGES`` allows is refused at once, on the page that
  announces it (a server claiming a billion users costs one request, not forty minutes);
* a listing that runs past the ``totalResults`` of its first page by more than one page (resources created while
  it is read are allowed that much) is stopped;
* a page that repeats the previous one, or holds only resources already read, means the server ignores
  ``startIndex``;
* an empty page before ``totalResults`` is reached would truncate the list silently;
* without any ``totalResults``, the listing ends on a short page and never goes beyond ``SCIM_MAX_PAGES``.

A smaller ``itemsPerPage`` than asked is honoured: the next page starts after what was actually received.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .errors import PaginationError

__all__ = ["BYTES_PER_LISTED_USER", "fetch_pages", "int_or_none", "list_resources"]

BYTES_PER_LISTED_USER = 1_000
"""What one listed user costs the client in memory, rounded up (``benchmarks/listing_memory.py``: a minimal user
with its id kept for repeat detection measured 444 bytes in CPython 3.11; a user with name, e-mails and enterprise
attributes about twice that; docs/internals.md)."""

FetchPage = Callable[[int, int], Awaitable[Mapping[str, Any]]]
"""``fetch(start_index, count)``: one ListResponse body."""


def list_resources(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a ListResponse (``Resources``, or ``resources`` as some servers write it)."""
    for key in ("Resources", "resources"):
        value = body.get(key)
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
    return []


def int_or_none(value: object) -> int | None:
    """``value`` as an int, ``None`` when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError, OverflowError):
        return None


def _identity(resource: Mapping[str, Any]) -> str:
    scim_id = resource.get("id")
    return scim_id if isinstance(scim_id, str) else json.dumps(resource, sort_keys=True)


def _too_many(resource_type: str, total: int, per_page: int, max_pages: int) -> PaginationError:
    needed = math.ceil(total / per_page)
    return PaginationError(
        f"GET {resource_type}: the server announces totalResults={total}, which at {per_page} per page needs "
        f"{needed} pages, more than SCIM_MAX_PAGES={max_pages} allows; refused before reading on. If the target "
        "really holds that many, raise SCIM_MAX_PAGES (each 1,000,000 listed users take about 1 GB); otherwise "
        "the target's paging is broken"
    )


async def fetch_pages(
    fetch: FetchPage, resource_type: str, *, count: int, max_pages: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield the new resources of every page ``fetch`` returns, within the bounds of the module docstring."""
    start = 1
    pages = 0
    first_total: int | None = None
    seen: set[str] = set()
    previous_ids: list[str] | None = None
    while True:
        if pages >= max_pages:
            raise PaginationError(
                f"GET {resource_type}: still more pages after {pages}, the most SCIM_MAX_PAGES allows; refusing "
                "to read on (raise SCIM_MAX_PAGES if the target really holds more than "
                f"{pages * count} resources)"
            )
        body = await fetch(start, count)
        pages += 1
        resources = list_resources(body)
        total = int_or_none(body.get("totalResults"))
        per_page = max(len(resources), 1)
        if total is not None and resources and math.ceil(total / per_page) > max_pages:
            raise _too_many(resource_type, total, per_page, max_pages)
        if first_total is None and total is not None:
            first_total = total
        ids = [_identity(resource) for resource in resources]
        if resources and (ids == previous_ids or (start > 1 and all(each in seen for each in ids))):
            raise PaginationError(
                f"GET {resource_type}: the page at startIndex={start} repeats resources already read; the server "
                "seems to ignore startIndex, so the listing cannot be read faithfully"
            )
        read_so_far = start - 1 + len(resources)
        if first_total is not None and read_so_far > first_total + count:
            raise PaginationError(
                f"GET {resource_type}: {read_so_far} resources read, more than the totalResults={first_total} "
                "its first page announced (and a page to spare); the server's paging does not end, refusing to "
                "read on"
            )
        fresh = [r for r, key in zip(resources, ids, strict=True) if key not in seen]
        seen.update(ids)
        if fresh:
            yield fresh
        if total is None:
            if not resources or len(resources) < count:
                return
        elif read_so_far >= total:
            return
        elif not resources:
            raise PaginationError(
                f"GET {resource_type}: an empty page at startIndex={start} while totalResults={total}; refusing "
                "to return a truncated list"
            )
        start += len(resources)
        previous_ids = ids
