"""The emulator's rate limiter can announce itself: ``X-RateLimit-*`` or the IETF ``RateLimit`` fields on every SCIM
answer, 429s included; unannounced (the default) it says nothing until it answers 429."""

from __future__ import annotations

import httpx
import pytest

from scim_pipeline.emulator import EmulatorConfig
from scim_pipeline.emulator.cli import add_arguments, config_from_args


@pytest.mark.parametrize("config", [EmulatorConfig(rate_limit_per_s=5, announce_rate_limit="x-ratelimit")])
async def test_x_ratelimit_headers_count_down_to_the_429(scim: httpx.AsyncClient) -> None:
    answers = [await scim.get("Users") for _ in range(8)]
    remaining = [int(answer.headers["x-ratelimit-remaining"]) for answer in answers]
    assert {answer.headers["x-ratelimit-limit"] for answer in answers} == {"5"}
    assert remaining[:5] == [4, 3, 2, 1, 0]
    assert answers[5].status_code == 429
    assert answers[5].headers["x-ratelimit-remaining"] == "0"
    assert int(answers[5].headers["x-ratelimit-reset"]) >= 1


@pytest.mark.parametrize("config", [EmulatorConfig(rate_limit_per_s=5, announce_rate_limit="ietf")])
async def test_ietf_fields_announce_the_policy_and_what_remains(scim: httpx.AsyncClient) -> None:
    answer = await scim.get("Users")
    assert answer.headers["ratelimit-policy"] == '"default";q=5;w=1'
    assert answer.headers["ratelimit"].startswith('"default";r=4;t=')


@pytest.mark.parametrize("config", [EmulatorConfig(rate_limit_per_s=5)])
async def test_an_unannounced_limit_sends_no_rate_limit_headers(scim: httpx.AsyncClient) -> None:
    answers = [await scim.get("Users") for _ in range(7)]
    assert any(answer.status_code == 429 for answer in answers)
    assert not any(name.lower().startswith(("ratelimit", "x-ratelimit")) for a in answers for name in a.headers)


def test_the_cli_flag_chooses_the_announcement() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--rate-limit", "25", "--announce-rate-limit", "ietf"]))
    assert (config.rate_limit_per_s, config.announce_rate_limit) == (25, "ietf")
    with pytest.raises(ValueError, match="announce_rate_limit"):
        EmulatorConfig(announce_rate_limit="loud")
