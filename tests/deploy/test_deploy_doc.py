"""docs/deploy.md says what the manifests and the code do: which process talks to MongoDB and
Redis, which process gets which secret, and what the notifier's readiness checks."""

from __future__ import annotations

import re

import pytest
import stripe

from services.notifier.app import DrainPolicy, Notifier
from services.notifier.connection import SocketPolicy
from tests.deploy.test_manifests import PORTS, ROOT, deployments, env_map, only_container

DEPLOY_DOC = (ROOT / "docs" / "deploy.md").read_text()
# What a process talks to, as the table names it, and the setting that says where it is.
DEPENDENCIES = {"MongoDB": "MONGODB_URI", "Redis": "REDIS_URL"}


def table_rows(first_cell: str) -> dict[str, str]:
    """The first row of the doc's tables whose first cell matches `first_cell`, for each such
    cell: that cell -> the row's last."""
    row = re.compile(rf"^\| *({first_cell}) *\|(?:.*\|)? *([^|]+?) *\|$", re.MULTILINE)
    rows: dict[str, str] = {}
    for found in row.finditer(DEPLOY_DOC):
        rows.setdefault(found[1], found[2])
    return rows


def processes_named(cell: str) -> set[str]:
    if "all three" in cell:
        return set(PORTS)
    return {name for name in PORTS if re.search(rf"\b{name}\b", cell)}


def secrets_of(process: str) -> set[str]:
    env = env_map(only_container(deployments("base")[process]))
    return {name for name, var in env.items() if "secretKeyRef" in var.get("valueFrom", {})}


@pytest.mark.parametrize("process", sorted(PORTS))
def test_the_process_table_names_the_stores_each_process_is_given(process: str) -> None:
    talks_to = table_rows("|".join(PORTS))[process]
    env = env_map(only_container(deployments("base")[process]))
    for dependency, setting in DEPENDENCIES.items():
        assert (dependency in talks_to) == (setting in env), f"{process}: {dependency}"


def test_the_secret_table_names_the_processes_given_each_key() -> None:
    keys = table_rows(r"`[A-Z_]+`(?:(?:,| or| and) `[A-Z_]+`)*")
    assert keys, "no table of the Secret's keys in docs/deploy.md"
    for cell, used_by in keys.items():
        for key in re.findall(r"`([A-Z_]+)`", cell):
            given = {process for process in PORTS if key in secrets_of(process)}
            assert processes_named(used_by) == given, key


def test_the_notifiers_readiness_is_described_as_it_checks() -> None:
    checks = Notifier("redis://unused", None, SocketPolicy(), DrainPolicy()).readiness_checks()
    [described] = re.findall(r"Notifier: (.+?) — an unready replica", DEPLOY_DOC, re.DOTALL)
    assert set(re.findall(r"\(`([a-z-]+)`\)", described)) == set(checks)


def test_the_webhook_endpoint_is_created_in_the_api_version_the_sdk_pins() -> None:
    """Events arrive in the endpoint's API version (otherwise the account's default, which
    moves when someone upgrades it in the Dashboard): the one the code reads is the SDK's."""
    [command] = re.findall(
        r"^curl https://api\.stripe\.com/v1/webhook_endpoints .*?^```", DEPLOY_DOC, re.DOTALL | re.M
    )
    assert f"-d api_version={stripe.api_version}" in command
