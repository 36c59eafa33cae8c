"""A sync process killed (SIGKILL) at any point resumes on the next run: no duplicate, nothing lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.state import ProvisioningState

from .conftest import make_roster, user

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import httpx
    from scim_pipeline.scim import ConnectionSettings, ScimClient
    from scim_pipeline.sync.cycle import run_cycle
    from scim_pipeline.sync.state import ProvisioningState
    from tests.sync.test_crash_resume import roster

    base_url, token_url, state_path, method, path_part, after = sys.argv[1:7]
    seen = 0

    class KillAfter(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request):
            global seen
            response = await super().handle_async_request(request)
            if request.method == method and path_part in request.url.path:
                seen += 1
                if seen >= int(after):
                    await response.aread()
                    os.kill(os.getpid(), signal.SIGKILL)  # the answer arrived; nothing recorded it yet
            return response

    async def main():
        settings = ConnectionSettings(base_url=base_url, token_url=token_url, client_id="scim-demo",
                                      client_secret="demo-secret", concurrency=4)
        async with ScimClient(settings, transport=KillAfter()) as client:
            with ProvisioningState.open(state_path) as state:
                await run_cycle(client, state, roster(), run_id="killed", member_chunk=10)

    asyncio.run(main())
    """
)


def roster():  # type: ignore[no-untyped-def]
    """The roster both the killed process and the rerun sync: 60 users, 3 groups, 90 memberships."""
    people = [user(f"user{i:02d}") for i in range(60)]
    groups = ["Admins", "Ops", "Everyone"]
    members = [("Everyone", f"user{i:02d}") for i in range(60)]
    members += [("Admins", f"user{i:02d}") for i in range(0, 60, 4)]
    members += [("Ops", f"user{i:02d}") for i in range(1, 60, 4)]
    return make_roster(people, groups, members)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path_part", "after"),
    [
        ("POST", "/Users", "1"),  # right after the first create was answered
        ("POST", "/Users", "25"),  # mid-users
        ("PATCH", "/Groups", "2"),  # mid-memberships
    ],
)
def test_killed_sync_converges_on_rerun_without_duplicates(
    tmp_path: Path, method: str, path_part: str, after: str
) -> None:
    state_path = tmp_path / "state.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with EmulatorServer(EmulatorConfig()) as server:
        child = subprocess.run(
            [sys.executable, str(script), server.base_url, server.token_url, str(state_path), method, path_part, after],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == -9, child.stderr[-2000:]

        async def rerun() -> None:
            settings = ConnectionSettings(
                base_url=server.base_url, token_url=server.token_url, client_id="scim-demo", client_secret="demo-secret"
            )
            async with ScimClient(settings) as client:
                with ProvisioningState.open(state_path) as state:
                    first = await run_cycle(client, state, roster(), run_id="rerun", member_chunk=10)
                    assert not first.failed, first.execution.failures
                    second = await run_cycle(client, state, roster(), run_id="settled", member_chunk=10)
                    assert second.plan.is_empty
                    managed = state.managed_users()
                    assert managed["scim_id"].notna().all()
                    assert len(managed) == 60

        asyncio.run(rerun())
        dump = server.emulator.store.dump()
    names = [u["userName"] for u in dump["Users"]]
    assert sorted(names) == sorted(f"user{i:02d}" for i in range(60)), "every user exactly once"
    groups = {g["displayName"]: g for g in dump["Groups"]}
    assert sorted(groups) == ["Admins", "Everyone", "Ops"]
    by_id = {u["id"]: u["userName"] for u in dump["Users"]}
    everyone = {by_id[m["value"]] for m in groups["Everyone"].get("members", [])}
    assert len(everyone) == 60
