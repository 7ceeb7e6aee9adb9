"""The sample configuration in the repository is one the services accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "Config.example.toml"


def test_the_sample_config_is_read_with_the_original_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("MONGODB_URI", "STRIPE_SECRET_KEY", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Config.toml").write_text(EXAMPLE.read_text())
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.effective_mongodb_uri().startswith("mongodb://localhost:27017")
    assert settings.success_redirect_url.endswith("session_id={CHECKOUT_SESSION_ID}")
    assert settings.mongodb_collection == "payments"
