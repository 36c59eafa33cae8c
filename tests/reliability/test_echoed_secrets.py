"""A target whose answers echo our credentials, driven through `scim-pipeline sync` as a user runs it: the bearer
token and the client secret are found nowhere — not in stdout or stderr, not in any file of the Dagster home (run
storage, event logs, the run reports) and not in the state store's audit or last-error rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.scim.hostile import CLIENT_ID, CLIENT_SECRET, HostileServer, RawRequest, answer

from .conftest import person, run_cli, write_roster


async def echo_everything(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    authorization = request.headers.get("authorization", "")
    token = authorization.removeprefix("Bearer ")
    if request.method == "GET":  # an empty tenant: the first run adopts nothing
        await answer(
            writer,
            200,
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": 0,
                "Resources": [],
                "note": f"served to {authorization}",
            },
        )
        return
    await answer(
        writer,
        400,
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400",
            "scimType": "invalidValue",
            "detail": f"refused {request.method} with Authorization: {authorization} (token {token}, "
            f"secret {CLIENT_SECRET})",
        },
        reason=f"Bad {token}",
        headers={"X-Echo": authorization},
    )


def test_echoed_credentials_reach_no_output_file_or_state_row(clean_env: dict[str, str], tmp_path: Path) -> None:
    roster = write_roster(tmp_path / "roster", [person(i) for i in range(3)])
    state = tmp_path / "state.sqlite"
    with HostileServer(echo_everything) as server:
        env = {
            **clean_env,
            "SCIM_BASE_URL": server.base_url,
            "SCIM_TOKEN_URL": server.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster),
            "SCIM_STATE_URL": f"sqlite:///{state}",
        }
        result = run_cli("sync", "--json", env=env)
        tokens = list(server.tokens)

    assert tokens, "the target issued a token and saw it sent back"
    assert result.returncode == 1  # every create refused
    document = json.loads(result.stdout)
    assert document["failures"], result.stdout
    assert any("invalidValue" in failure["message"] for failure in document["failures"])
    needles = [*tokens, CLIENT_SECRET]
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    for path in [*Path(clean_env["DAGSTER_HOME"]).rglob("*"), *tmp_path.glob("state.sqlite*")]:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    leaks = [(where, needle[:6]) for where, text in texts.items() for needle in needles if needle in text]
    assert leaks == []
    assert len(texts) > 5  # the run storage, the event log, the report and the state store were all searched
