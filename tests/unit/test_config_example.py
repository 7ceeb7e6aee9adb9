"""The sample configuration in the repository is one the services accept, and copying it to
Config.toml (as the README suggests) keeps `make run`'s Checkout redirects to its rider page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devstack.stack import Ports, Stack, StackOptions
from shared.settings import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "Config.example.toml"
REDIRECTS = ("SUCCESS_REDIRECT_URL", "CANCEL_REDIRECT_URL")


@pytest.fixture
def copied(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The sample copied to Config.toml in the working directory, no setting of ours around."""
    for name in ("MONGODB_URI", "STRIPE_SECRET_KEY", "KAFKA_BOOTSTRAP_SERVERS", *REDIRECTS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PAYMENTS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "Config.toml"
    config.write_text(EXAMPLE.read_text())
    return config


def test_the_sample_config_is_read_with_the_original_keys(copied: Path) -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.effective_mongodb_uri().startswith("mongodb://localhost:27017")
    assert settings.mongodb_collection == "payments"


def test_a_copy_of_the_sample_leaves_checkout_returning_to_the_rider_page(
    copied: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_CONFIG", str(copied))
    stack = Stack(StackOptions(folder=copied.parent, ports=Ports(rider_page=8181)))
    redirects = stack.service_environment()
    assert redirects["SUCCESS_REDIRECT_URL"].startswith("http://127.0.0.1:8181/?result=success")
    assert redirects["CANCEL_REDIRECT_URL"] == "http://127.0.0.1:8181/?result=cancel"


def test_its_production_redirects_are_valid_once_uncommented(copied: Path) -> None:
    uncommented = re.sub(
        r"^# ((success|cancel)RedirectUrl = )", r"\1", copied.read_text(), flags=re.MULTILINE
    )
    assert uncommented != copied.read_text()
    copied.write_text(uncommented)
    settings = load_settings()
    assert settings.success_redirect_url.endswith("session_id={CHECKOUT_SESSION_ID}")
    assert settings.cancel_redirect_url.startswith("https://")
