"""Shared pieces of the reliability tests: roster folders, an emulator in its own process, an outside observer."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "scim_pipeline.cli"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

USER_COLUMNS = [
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
]


def person(index: int, **overrides: str) -> dict[str, str]:
    """One roster row with distinct, plain values (``overrides`` replace columns)."""
    row = {
        "user_name": f"user{index:05d}@example.com",
        "external_id": f"E{index:05d}",
        "given_name": f"Given{index}",
        "family_name": f"Family{index}",
        "display_name": f"Given{index} Family{index}",
        "email": f"user{index:05d}@example.com",
        "active": "true",
        "department": ("Finance", "Engineering", "Sales")[index % 3],
        "title": "Analyst",
        "employee_number": str(100000 + index),
        "manager": "",
    }
    row.update(overrides)
    return row


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})


def write_roster(
    folder: Path,
    users: Sequence[dict[str, str]],
    groups: Sequence[str] = (),
    memberships: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``users.csv`` (+ ``groups.csv`` and ``memberships.csv``) into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "users.csv", USER_COLUMNS, users)
    write_csv(folder / "groups.csv", ["group_name", "external_id"], [{"group_name": g} for g in groups])
    write_csv(
        folder / "memberships.csv",
        ["group_name", "user_name"],
        [{"group_name": g, "user_name": u} for g, u in memberships],
    )
    return folder


@dataclass
class EmulatorProcess:
    """``scim-pipeline emulator`` in a subprocess, read from outside: its SCIM API and its test endpoints."""

    process: subprocess.Popen[str]
    base_url: str
    token_url: str
    client_id: str
    client_secret: str
    output: list[str] = field(default_factory=list)
    _http: httpx.Client | None = None

    @property
    def origin(self) -> str:
        return self.base_url.rsplit("/scim/v2", 1)[0]

    def env(self) -> dict[str, str]:
        """The SCIM_* variables pointing the pipeline at this emulator."""
        return {
            "SCIM_BASE_URL": self.base_url,
            "SCIM_TOKEN_URL": self.token_url,
            "SCIM_CLIENT_ID": self.client_id,
            "SCIM_CLIENT_SECRET": self.client_secret,
        }

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.origin, timeout=60)
        return self._http

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.http.get("/emulator/requests").json()
        return log

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] in WRITE_METHODS and r["path"].startswith("/scim/")]

    def clear_requests(self) -> None:
        self.http.delete("/emulator/requests").raise_for_status()

    def counters(self) -> dict[str, dict[str, int]]:
        counters: dict[str, dict[str, int]] = self.http.get("/emulator/counters").json()
        return counters

    def state(self) -> dict[str, list[dict[str, Any]]]:
        dump: dict[str, list[dict[str, Any]]] = self.http.get("/emulator/state").json()
        return dump

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_emulator(
    *flags: str,
    client_id: str = "reliability",
    client_secret: str = "reliability-secret-0c41",
    timeout_s: float = 30.0,
) -> EmulatorProcess:
    """Start ``scim-pipeline emulator --port 0`` with ``flags`` and wait until it prints its URLs."""
    process = subprocess.Popen(
        [*CLI, "emulator", "--port", "0", "--client", f"{client_id}:{client_secret}", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    printed: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not {"SCIM_BASE_URL", "SCIM_TOKEN_URL"} <= printed.keys():
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"(SCIM_BASE_URL|SCIM_TOKEN_URL)=(\S+)", line)
        if found:
            printed[found.group(1)] = found.group(2).strip("'\"")
    if not {"SCIM_BASE_URL", "SCIM_TOKEN_URL"} <= printed.keys():
        process.kill()
        process.wait(timeout=5)
        raise AssertionError("the emulator did not print its URLs:\n" + "".join(lines))
    return EmulatorProcess(
        process, printed["SCIM_BASE_URL"], printed["SCIM_TOKEN_URL"], client_id, client_secret, lines
    )


class ScimObserver:
    """Reads a SCIM target through its API with its own token, as an auditor outside the pipeline would."""

    def __init__(self, base_url: str, token_url: str, client_id: str, client_secret: str) -> None:
        token = httpx.post(
            token_url,
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
            timeout=30,
        ).json()["access_token"]
        self.base_url = base_url
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def close(self) -> None:
        self.http.close()

    def list(self, resource_type: str) -> list[dict[str, Any]]:
        """Every resource, all pages (index pagination), retrying the emulator's injected faults."""
        resources: list[dict[str, Any]] = []
        start = 1
        while True:
            page = self._get(f"{self.base_url}/{resource_type}", {"startIndex": str(start), "count": "100"})
            received = page.get("Resources", [])
            resources.extend(received)
            start += len(received)
            if not received or start > page["totalResults"]:
                return resources

    def _get(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        for _ in range(50):
            try:
                response = self.http.get(url, params=params)
            except httpx.TransportError:
                continue
            if response.status_code in (429, 500, 503):
                time.sleep(0.05)
                continue
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body
        raise AssertionError(f"GET {url} kept failing")


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment without any SCIM_* variable and with a fresh $DAGSTER_HOME (also set in this process)."""
    for name in list(os.environ):
        if name.startswith("SCIM_"):
            monkeypatch.delenv(name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}


def run_cli(*args: str, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """``scim-pipeline ARGS`` in a subprocess; never raises on a non-zero exit."""
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT
    )
