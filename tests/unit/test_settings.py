from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "MONGODB_URI",
        "STRIPE_SECRET_KEY",
        "PAYMENT_CURRENCY",
        "PAYMENTS_CONFIG",
        "KAFKA_BOOTSTRAP_SERVERS",
        "PORT",
        "STRIPE_WEBHOOK_SECRET",
        "INTERNAL_PORT",
        "INTERNAL_API_TOKENS",
        "PAYMENTS_ENVIRONMENT",
        "BIND_HOST",
        "NOTIFIER_JWT_SECRET",
        "NOTIFIER_JWT_PUBLIC_KEY",
        "NOTIFIER_MAX_TOKEN_LIFETIME_S",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.effective_mongodb_uri() == "mongodb://localhost:27017"
    assert settings.mongodb_database == "payment-service-db"
    assert settings.mongodb_collection == "payments"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.stripe_api_base == "https://api.stripe.com"
    assert settings.payment_currency == "usd"
    assert settings.kafka_session_timeout_s == 10
    assert settings.http_port(9090) == 9090
    assert settings.internal_port == 9092
    assert settings.api_tokens() == []


def test_api_tokens_may_be_rotated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERNAL_API_TOKENS", " new-token , old-token ,")
    assert load_settings().api_tokens() == ["new-token", "old-token"]


def test_original_config_toml_keys_are_read(tmp_path: Path) -> None:
    (tmp_path / "Config.toml").write_text(
        """
        [payment_service]
        stripeSecretKey = "sk_test_toml"
        successRedirectUrl = "https://rides.example/ok"
        cancelRedirectUrl = "https://rides.example/no"
        host = "mongo.internal"
        port = 27018
        username = "svc"
        password = "p@ss word"
        database = "db1"
        collection = "col1"
        kafkaBootstrapServers = "k1:9092,k2:9092"
        """
    )
    settings = load_settings()
    assert settings.stripe_secret_key is not None
    assert settings.stripe_secret_key.get_secret_value() == "sk_test_toml"
    assert settings.success_redirect_url == "https://rides.example/ok"
    assert settings.cancel_redirect_url == "https://rides.example/no"
    assert settings.effective_mongodb_uri() == "mongodb://svc:p%40ss+word@mongo.internal:27018"
    assert (settings.mongodb_database, settings.mongodb_collection) == ("db1", "col1")
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.http_port(6066) == 6066  # the TOML `port` is MongoDB's, not the process's


def test_environment_wins_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('stripeSecretKey = "sk_from_toml"\nhost = "from-toml"\n')
    monkeypatch.setenv("PAYMENTS_CONFIG", str(config))
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_from_env")
    monkeypatch.setenv("MONGODB_URI", "mongodb://from-env:1/?retryWrites=false")
    settings = load_settings()
    assert settings.stripe_secret_key is not None
    assert settings.stripe_secret_key.get_secret_value() == "sk_from_env"
    assert settings.effective_mongodb_uri() == "mongodb://from-env:1/?retryWrites=false"


def test_missing_required_setting_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match=r"^STRIPE_SECRET_KEY is required by the consumer"):
        load_settings().require("stripe_secret_key", by="consumer")


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("PAYMENT_CURRENCY", "dollars", "PAYMENT_CURRENCY"),
        ("PORT", "http", "PORT"),
        ("KAFKA_SESSION_TIMEOUT_S", "0", "KAFKA_SESSION_TIMEOUT_S"),
    ],
)
def test_invalid_setting_names_itself(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"invalid setting {named}"):
        load_settings()


def test_missing_config_file_named_by_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_CONFIG", "/nonexistent/Config.toml")
    with pytest.raises(ConfigError, match="PAYMENTS_CONFIG"):
        load_settings()


def test_webhook_secrets_may_be_rotated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old")
    assert load_settings().webhook_secrets() == ["whsec_new", "whsec_old"]


# --- issue 24, finding 8: production refuses to start without auth --------------------------

GOOD_TOKEN = "t" * 32


def test_production_is_the_default_and_the_local_stack_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")  # a cluster's own variable: not ours
    assert not load_settings().is_local
    monkeypatch.setenv("PAYMENTS_ENVIRONMENT", "local")
    assert load_settings().is_local
    monkeypatch.setenv("PAYMENTS_ENVIRONMENT", "staging")
    with pytest.raises(ConfigError, match="invalid setting PAYMENTS_ENVIRONMENT"):
        load_settings()


def test_processes_listen_on_loopback_locally_and_everywhere_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().listen_host() is None  # every interface: what a container needs
    monkeypatch.setenv("PAYMENTS_ENVIRONMENT", "local")
    assert load_settings().listen_host() == "127.0.0.1"
    monkeypatch.setenv("BIND_HOST", "0.0.0.0")
    assert load_settings().listen_host() == "0.0.0.0"
    monkeypatch.setenv("BIND_HOST", "")
    assert load_settings().listen_host() == "127.0.0.1"


@pytest.mark.parametrize("tokens", [None, "", " , ", " ,, "])
def test_production_requires_payments_api_tokens(
    monkeypatch: pytest.MonkeyPatch, tokens: str | None
) -> None:
    if tokens is not None:
        monkeypatch.setenv("INTERNAL_API_TOKENS", tokens)
    with pytest.raises(ConfigError, match=r"^INTERNAL_API_TOKENS is required by the webhook"):
        load_settings().require_api_tokens()
    monkeypatch.setenv("PAYMENTS_ENVIRONMENT", "local")
    load_settings().require_api_tokens()  # the local stack may leave the API open


def test_production_refuses_a_short_payments_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERNAL_API_TOKENS", f"{GOOD_TOKEN}, short")
    with pytest.raises(ConfigError, match=r"^INTERNAL_API_TOKENS: token 2 of 2 has 5 bytes"):
        load_settings().require_api_tokens()
    monkeypatch.setenv("INTERNAL_API_TOKENS", f"{GOOD_TOKEN}, {'u' * 32}")
    load_settings().require_api_tokens()


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_production_requires_a_notifier_key(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    if secret is not None:
        monkeypatch.setenv("NOTIFIER_JWT_SECRET", secret)
        monkeypatch.setenv("NOTIFIER_JWT_PUBLIC_KEY", secret)
    with pytest.raises(ConfigError, match=r"^NOTIFIER_JWT_SECRET or NOTIFIER_JWT_PUBLIC_KEY is"):
        load_settings().require_notifier_auth()
    monkeypatch.setenv("PAYMENTS_ENVIRONMENT", "local")
    load_settings().require_notifier_auth()


def test_production_refuses_a_short_notifier_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_JWT_SECRET", "x")
    with pytest.raises(ConfigError, match=r"^NOTIFIER_JWT_SECRET has 1 bytes; at least 32"):
        load_settings().require_notifier_auth()
    monkeypatch.setenv("NOTIFIER_JWT_SECRET", GOOD_TOKEN)
    load_settings().require_notifier_auth()
    monkeypatch.setenv("NOTIFIER_JWT_SECRET", "")
    monkeypatch.setenv("NOTIFIER_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----...")
    load_settings().require_notifier_auth()  # the PEM itself is checked by the notifier


def test_token_lifetimes_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().notifier_max_token_lifetime_s == 86_400
    monkeypatch.setenv("NOTIFIER_MAX_TOKEN_LIFETIME_S", "900")
    assert load_settings().notifier_max_token_lifetime_s == 900
    monkeypatch.setenv("NOTIFIER_MAX_TOKEN_LIFETIME_S", "0")
    with pytest.raises(ConfigError, match="invalid setting NOTIFIER_MAX_TOKEN_LIFETIME_S"):
        load_settings()
