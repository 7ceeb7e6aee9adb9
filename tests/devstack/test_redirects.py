"""`make run` points Checkout's redirects at the rider page, unless the developer chose them."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import Ports, Stack, StackOptions


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in ("SUCCESS_REDIRECT_URL", "CANCEL_REDIRECT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYMENTS_CONFIG", str(tmp_path / "absent.toml"))
    return Stack(StackOptions(folder=tmp_path, ports=Ports(rider_page=8181)))


def test_checkout_returns_to_the_rider_page_with_the_result(stack: Stack) -> None:
    env = stack.service_environment()
    assert env["SUCCESS_REDIRECT_URL"] == (
        "http://127.0.0.1:8181/?result=success&session_id={CHECKOUT_SESSION_ID}"
    )
    assert env["CANCEL_REDIRECT_URL"] == "http://127.0.0.1:8181/?result=cancel"


def test_a_redirect_set_in_the_environment_or_config_file_wins(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUCCESS_REDIRECT_URL", "https://mine.example/ok")
    config = tmp_path / "Config.toml"
    config.write_text('[payments]\ncancelRedirectUrl = "https://mine.example/no"\n')
    monkeypatch.setenv("PAYMENTS_CONFIG", str(config))
    env = stack.service_environment()
    assert "SUCCESS_REDIRECT_URL" not in env
    assert "CANCEL_REDIRECT_URL" not in env
