"""A source's cheap change signal: an opaque value that moves whenever the roster may have changed.

The leaver sensor polls it every few seconds instead of reading the roster, and never asks the SCIM target
anything. Each source that can answer cheaply has a `change_signal()` method:

- file: the roster files' names, sizes, modification times and inodes (`stat`: no data is read).
- ldap: on AD the root DSE's `highestCommittedUSN` (one search); on OpenLDAP the `contextCSN` of the database
  holding the user base (kept by the syncprov overlay; two base searches), else a listing of every entry's
  `modifyTimestamp` under the bases (one attribute per entry).
- sql: the rows of `SCIM_SQL_CHANGE_QUERY` (e.g. `SELECT max(updated_at), count(*) FROM hr.people`), else a digest
  of the roster queries' rows (a full read of the tables).

A value may move without a relevant change (any write in the directory moves `contextCSN`): that costs one
incremental user sync, never a missed leaver. The Entra ID, Okta and SCIM sources have no change signal yet:
asking raises `ChangeSignalUnsupportedError` saying so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from scim_pipeline.scim.errors import ConfigurationError

__all__ = ["ChangeSignal", "ChangeSignalUnsupportedError", "SignalingSource", "change_signal", "digest"]


@dataclass(frozen=True)
class ChangeSignal:
    """One poll's answer: `value` (opaque, compared for equality only), what was asked (`probe`, for the
    sensor's messages, never a secret) and how many requests the source received (`requests`)."""

    value: str
    probe: str
    requests: int = 0


class ChangeSignalUnsupportedError(ConfigurationError):
    """The source cannot say cheaply whether it changed (names the source and what to do instead)."""


@runtime_checkable
class SignalingSource(Protocol):
    def change_signal(self) -> ChangeSignal: ...


def change_signal(source: object) -> ChangeSignal:
    """The change signal of `source`; raises `ChangeSignalUnsupportedError` for a source without one."""
    if isinstance(source, SignalingSource):
        return source.change_signal()
    kind = getattr(source, "kind", None) or type(source).__name__
    raise ChangeSignalUnsupportedError(
        f"the {kind} source has no cheap change signal, so the leaver sensor cannot poll it: leavers are "
        "deprovisioned by the scheduled sync (scim_sync_schedule) instead; the file, ldap and sql sources have one"
    )


def digest(parts: Iterable[object]) -> str:
    """A short, stable fingerprint of `parts` (each part's `repr`, in order)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(repr(part).encode("utf-8", "backslashreplace"))
        hasher.update(b"\x00")
    return hasher.hexdigest()[:32]
