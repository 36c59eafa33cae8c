"""Hand-built roster frames in the normalized shape of docs/internals.md, for engine tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest

from scim_pipeline.emulator import EmulatorConfig, create_app
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.sync.plan.sharding import stable_shard
from scim_pipeline.sync.state import ProvisioningState

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
EMAIL = 'emails[type eq "work"].value'
USER_ATTRIBUTES = (
    "userName",
    "externalId",
    "name.givenName",
    "name.familyName",
    "displayName",
    EMAIL,
    "active",
    "title",
    f"{ENTERPRISE}:department",
    f"{ENTERPRISE}:employeeNumber",
    f"{ENTERPRISE}:manager",
)


@dataclass
class HandRoster:
    """The three frames an engine plan reads (the real `Roster` has more; the engine needs only these)."""

    users: pd.DataFrame
    groups: pd.DataFrame
    memberships: pd.DataFrame
    rejected: pd.DataFrame = field(default_factory=pd.DataFrame)


def user(name: str, **attrs: Any) -> dict[str, Any]:
    """A roster user keyed by userName with sensible defaults; keyword `given`, `family`, `title`, `department`,
    `manager`, `email`, `active` override them (None clears a value)."""
    given = attrs.pop("given", name.split(".", maxsplit=1)[0].title())
    family = attrs.pop("family", "Example")
    record: dict[str, Any] = {
        "userName": name,
        "externalId": attrs.pop("external_id", None),
        "name.givenName": given,
        "name.familyName": family,
        "displayName": attrs.pop("display", f"{given} {family}" if given and family else None),
        EMAIL: attrs.pop("email", f"{name}@example.com"),
        "active": attrs.pop("active", True),
        "title": attrs.pop("title", None),
        f"{ENTERPRISE}:department": attrs.pop("department", None),
        f"{ENTERPRISE}:employeeNumber": attrs.pop("employee_number", None),
        f"{ENTERPRISE}:manager": attrs.pop("manager", None),
    }
    if attrs:
        raise TypeError(f"unknown user attributes: {sorted(attrs)}")
    return record


def make_roster(
    users: Iterable[Mapping[str, Any]] = (),
    groups: Iterable[str | Mapping[str, Any]] = (),
    memberships: Iterable[tuple[str, str]] = (),
    *,
    shards: int = 4,
) -> HandRoster:
    """Build normalized roster frames: users keyed by userName, groups by displayName, memberships as
    (group name, user name) pairs."""
    user_rows = []
    for row_number, record in enumerate(users, start=2):
        key = str(record["userName"])
        user_rows.append(
            {
                "key": key,
                "key_norm": key.casefold(),
                "shard": 0,
                "row": row_number,
                **{path: record.get(path) for path in USER_ATTRIBUTES},
            }
        )
    users_frame = pd.DataFrame(user_rows, columns=["key", "key_norm", "shard", "row", *USER_ATTRIBUTES])
    for column in users_frame.columns:
        if column == "active":
            users_frame[column] = users_frame[column].astype("bool")
        elif column in {"shard", "row"}:
            users_frame[column] = users_frame[column].astype("int64")
        else:
            users_frame[column] = users_frame[column].astype("string")
    users_frame["shard"] = stable_shard(users_frame["key_norm"], shards).astype("int64")

    group_rows = []
    for row_number, group in enumerate(groups, start=2):
        record = {"displayName": group} if isinstance(group, str) else dict(group)
        key = str(record["displayName"])
        group_rows.append(
            {
                "key": key,
                "key_norm": key.casefold(),
                "row": row_number,
                "displayName": record["displayName"],
                "externalId": record.get("externalId"),
            }
        )
    groups_frame = pd.DataFrame(group_rows, columns=["key", "key_norm", "row", "displayName", "externalId"])
    for column in groups_frame.columns:
        groups_frame[column] = groups_frame[column].astype("int64" if column == "row" else "string")

    pairs = [(g.casefold(), u.casefold(), i) for i, (g, u) in enumerate(memberships, start=2)]
    memberships_frame = pd.DataFrame(pairs, columns=["group_key_norm", "user_key_norm", "row"])
    memberships_frame["group_key_norm"] = memberships_frame["group_key_norm"].astype("string")
    memberships_frame["user_key_norm"] = memberships_frame["user_key_norm"].astype("string")
    memberships_frame["row"] = memberships_frame["row"].astype("int64")
    return HandRoster(users_frame, groups_frame, memberships_frame)


@pytest.fixture
def roster_factory() -> Any:
    return make_roster


@dataclass
class Target:
    """A ScimClient talking to an in-process emulator (ASGI transport: no socket, same behaviour)."""

    client: ScimClient
    emulator: Any

    def writes(self) -> list[Any]:
        """The write requests (POST/PUT/PATCH/DELETE) the emulator received since the last clear."""
        return [r for r in self.emulator.requests if r.method in {"POST", "PUT", "PATCH", "DELETE"}]

    def scim_requests(self) -> list[Any]:
        """Every SCIM request (token requests excluded) since the last clear."""
        return [r for r in self.emulator.requests if "/scim/v2/" in r.path]

    def users(self) -> dict[str, dict[str, Any]]:
        return {u["userName"]: u for u in self.emulator.store.dump()["Users"]}

    def groups(self) -> dict[str, dict[str, Any]]:
        return {g["displayName"]: g for g in self.emulator.store.dump()["Groups"]}

    def members(self, group_name: str) -> set[str]:
        by_id = {u["id"]: u["userName"] for u in self.emulator.store.dump()["Users"]}
        return {by_id[i] for i in self.emulator.store.member_ids(self.groups()[group_name]["id"])}


@asynccontextmanager
async def emulated_target(
    config: EmulatorConfig | None = None,
    *,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    **settings: Any,
) -> AsyncIterator[Target]:
    """An emulator app and a client for it; ``wrap`` decorates the transport (fault injection), ``settings``
    override ConnectionSettings fields."""
    app = create_app(config or EmulatorConfig())
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    if wrap is not None:
        transport = wrap(transport)
    connection = ConnectionSettings(
        base_url="http://127.0.0.1:8999/scim/v2",
        client_id="scim-demo",
        client_secret="demo-secret",
        **{"concurrency": 8, "max_retry_wait_s": 0.05, **settings},
    )
    async with ScimClient(connection, transport=transport) as client:
        try:
            yield Target(client, app.emulator)
        finally:
            app.emulator.close()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with emulated_target() as emulated:
        yield emulated


@pytest.fixture
def state() -> Iterator[ProvisioningState]:
    with ProvisioningState.open(":memory:") as store:
        yield store
