"""Reading the target within Delinea's rules: every request passes the filter rules, one ``container.value eq``
permissions read per container, and a container that cannot be read is reported while the others proceed."""

from __future__ import annotations

from urllib.parse import parse_qs

from scim_pipeline.sync.state import ProvisioningState
from tests.sync.conftest import Target
from tests.sync.pam.conftest import BASE, CONTAINER, access, cycle, permissions_on_target

ALLOWED_FILTER_ATTRIBUTES = {
    "Containers": {"name", "displayName"},
    "ContainerPermissions": {"container.value", "user.display", "user.value", "group.display", "group.value"},
    "PrivilegedData": {"privilegedData.value", "user.display", "user.value", "group.display", "group.value"},
}


# ---- the engine against the emulator ---------------------------------------------------------------------------


async def test_every_request_passes_the_filter_rules_with_one_permissions_read_per_container(
    target: Target, state: ProvisioningState
) -> None:
    await cycle(target, state, access(*BASE))
    target.emulator.clear_requests()
    await cycle(target, state, access(*BASE))
    reads = [r for r in target.scim_requests() if r.method == "GET"]
    for record in reads:
        filters = parse_qs(record.query).get("filter", [])
        if record.resource_type == "ContainerPermissions":
            assert len(filters) == 1, record
            assert filters[0].startswith('container.value eq "'), record
        for text in filters:
            assert text.split(" ", 1)[0] in ALLOWED_FILTER_ATTRIBUTES.get(record.resource_type, {"userName"}), text
            assert " or " not in text
    permission_reads = [parse_qs(r.query)["filter"][0] for r in reads if r.resource_type == "ContainerPermissions"]
    containers = {c["id"] for c in target.emulator.store.dump()["Containers"]}
    assert sorted(permission_reads) == sorted(f'container.value eq "{cid}"' for cid in containers)


async def test_a_container_that_cannot_be_read_is_reported_and_the_others_proceed(
    target: Target, state: ProvisioningState
) -> None:
    store = target.emulator.store
    parent = store.create("Containers", {"schemas": [CONTAINER], "name": "Europe"})
    store.create("Containers", {"schemas": [CONTAINER], "name": "Production"})
    store.create("Containers", {"schemas": [CONTAINER], "name": "Production", "parent": {"value": parent["id"]}})

    report = await cycle(target, state, access(*BASE))

    assert report.failed
    failures = [f for f in report.execution.failures if f.resource_type == "Containers"]
    assert [(f.op, f.key) for f in failures] == [("read", "Production")]
    assert {container for container, _principal, _rights in permissions_on_target(target)} == {"Staging"}
