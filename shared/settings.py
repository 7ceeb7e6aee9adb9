"""The one typed settings object, read from the environment and an optional Config.toml.

Environment variables win over the TOML file. The TOML file keeps the original service's keys
(`stripeSecretKey`, `host`, `port`, ...) so existing configuration files keep working.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.runtime import EventLoopKind

CONFIG_PATH_VARIABLE = "PAYMENTS_CONFIG"
DEFAULT_CONFIG_FILE = "Config.toml"

# The original service's Config.toml keys and the settings they feed.
ORIGINAL_TOML_KEYS = {
    "stripeSecretKey": "stripe_secret_key",
    "successRedirectUrl": "success_redirect_url",
    "cancelRedirectUrl": "cancel_redirect_url",
    "host": "mongodb_host",
    "port": "mongodb_port",
    "username": "mongodb_username",
    "password": "mongodb_password",
    "database": "mongodb_database",
    "collection": "mongodb_collection",
    "kafkaBootstrapServers": "kafka_bootstrap_servers",
}


Environment = Literal["production", "local"]
LOOPBACK = "127.0.0.1"
# HMAC secrets and bearer tokens shorter than this are guessable offline or by brute force.
MIN_SECRET_BYTES = 32
ONLY_LOCALLY = "only PAYMENTS_ENVIRONMENT=local (make run, the tests) runs without it"


class ConfigError(Exception):
    """A required setting is missing or invalid; the message is one line naming it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Production unless said otherwise: a deployment that forgets it gets the strict checks.
    # Prefixed, so that a cluster-wide ENVIRONMENT=staging neither matches nor breaks it.
    payments_environment: Environment = "production"
    # Unset: every interface (a container's port must be reachable), but loopback locally.
    bind_host: str | None = None

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_session_timeout_s: float = Field(default=10.0, ge=1, le=300)
    consumer_concurrency: int = Field(default=32, ge=1, le=1024)
    # How long a SIGTERM lets events in flight finish before abandoning them: well under
    # the pod's terminationGracePeriodSeconds (60), which must also cover leaving the group.
    shutdown_grace_s: float = Field(default=20.0, ge=0, le=600)
    # The safety net for payments reserved without a session (services/consumer/orphans.py).
    orphan_after_s: float = Field(default=300.0, ge=0)
    orphan_check_interval_s: float = Field(default=60.0, gt=0)
    # Faust's working files; the consumer keeps no state there (no tables), so /tmp is fine.
    faust_datadir: str = str(Path(tempfile.gettempdir()) / "payments-faust")

    mongodb_uri: str | None = None
    mongodb_host: str | None = None
    mongodb_port: int | None = Field(default=None, ge=1, le=65535)
    mongodb_username: str | None = None
    mongodb_password: SecretStr | None = None
    mongodb_database: str = "payment-service-db"
    mongodb_collection: str = "payments"

    redis_url: str = "redis://localhost:6379/0"

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    success_redirect_url: str = "http://localhost:3000/success"
    cancel_redirect_url: str = "http://localhost:3000/cancel"
    payment_currency: str = "usd"
    # The account's rate limit as this system may spend it (all replicas, all services), and
    # how many processes share it: each takes an equal part when Redis cannot be reached.
    stripe_max_requests_per_s: float = Field(default=20.0, gt=0)
    stripe_budget_processes: int = Field(default=4, ge=1)

    reconcile_interval_s: float = Field(default=60.0, gt=0)
    reconcile_after_s: float = Field(default=900.0, ge=0)
    reconcile_batch: int = Field(default=100, ge=1, le=10_000)
    reconcile_rate_per_s: float = Field(default=10.0, gt=0)
    processed_events_retention_days: float = Field(default=30.0, gt=0)

    port: int | None = Field(default=None, ge=1, le=65535)
    internal_port: int = Field(default=9092, ge=1, le=65535)
    internal_api_tokens: SecretStr | None = None
    log_level: str = "INFO"
    event_loop: EventLoopKind = "uvloop"

    notifier_jwt_secret: SecretStr | None = None
    notifier_jwt_public_key: SecretStr | None = None
    notifier_register_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    notifier_max_sockets_per_user: int = Field(default=10, ge=1)
    notifier_max_sockets: int = Field(default=15_000, ge=1)
    notifier_max_token_lifetime_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)

    @field_validator("payment_currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise ValueError("must be a three-letter ISO currency code such as usd")
        return value.lower()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, OriginalTomlSource(settings_cls)

    def effective_mongodb_uri(self) -> str:
        """MONGODB_URI as given, else one built from host/port/username/password."""
        if self.mongodb_uri:
            return self.mongodb_uri
        if not self.mongodb_host:
            return "mongodb://localhost:27017"
        credentials = ""
        if self.mongodb_username:
            password = self.mongodb_password.get_secret_value() if self.mongodb_password else ""
            credentials = f"{quote_plus(self.mongodb_username)}:{quote_plus(password)}@"
        return f"mongodb://{credentials}{self.mongodb_host}:{self.mongodb_port or 27017}"

    def webhook_secrets(self) -> list[str]:
        """STRIPE_WEBHOOK_SECRET may list several secrets, comma separated, during rotation."""
        if self.stripe_webhook_secret is None:
            return []
        raw = self.stripe_webhook_secret.get_secret_value()
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    def api_tokens(self) -> list[str]:
        """INTERNAL_API_TOKENS lists the payments API's bearer tokens, comma separated."""
        if self.internal_api_tokens is None:
            return []
        raw = self.internal_api_tokens.get_secret_value()
        return [token.strip() for token in raw.split(",") if token.strip()]

    def http_port(self, default: int) -> int:
        return self.port if self.port is not None else default

    @property
    def is_local(self) -> bool:
        return self.payments_environment == "local"

    def listen_host(self) -> str | None:
        """Where the process listens: BIND_HOST, else loopback locally; None is every
        interface (IPv4 and IPv6)."""
        if self.bind_host:
            return self.bind_host
        return LOOPBACK if self.is_local else None

    def require_api_tokens(self) -> None:
        """Outside the local stack the payments API asks for tokens, each long enough."""
        if self.is_local:
            return
        tokens = self.api_tokens()
        if not tokens:
            raise ConfigError(
                f"INTERNAL_API_TOKENS is required by the webhook but is empty; {ONLY_LOCALLY}"
            )
        for number, token in enumerate(tokens, start=1):
            size = len(token.encode())
            if size < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"INTERNAL_API_TOKENS: token {number} of {len(tokens)} has {size} bytes; "
                    f"at least {MIN_SECRET_BYTES} are required (openssl rand -hex 32)"
                )

    def require_notifier_auth(self) -> None:
        """Outside the local stack the notifier asks for tokens, checked with a strong key."""
        if self.is_local:
            return
        secret = _secret_text(self.notifier_jwt_secret)
        if not secret.strip() and not _secret_text(self.notifier_jwt_public_key).strip():
            raise ConfigError(
                "NOTIFIER_JWT_SECRET or NOTIFIER_JWT_PUBLIC_KEY is required by the notifier "
                f"but neither is set; {ONLY_LOCALLY}"
            )
        size = len(secret.encode())
        if secret.strip() and size < MIN_SECRET_BYTES:
            raise ConfigError(
                f"NOTIFIER_JWT_SECRET has {size} bytes; at least {MIN_SECRET_BYTES} are "
                "required (openssl rand -hex 32)"
            )

    def require(self, *names: str, by: str) -> None:
        """Raise ConfigError naming the first of `names` that is unset."""
        for name in names:
            value = getattr(self, name)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                raise ConfigError(f"{name.upper()} is required by the {by} but is not set")


def _secret_text(value: SecretStr | None) -> str:
    return "" if value is None else value.get_secret_value()


class OriginalTomlSource(PydanticBaseSettingsSource):
    """Reads Config.toml (or $PAYMENTS_CONFIG) with the original service's key names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values = _read_original_toml(_config_path())

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _config_path() -> Path | None:
    explicit = os.environ.get(CONFIG_PATH_VARIABLE)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_PATH_VARIABLE} names {path}, which is not a readable file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_original_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read configuration file {path}: {error}") from error
    values: dict[str, Any] = {}
    for key, value in _flatten_one_level(document).items():
        field = ORIGINAL_TOML_KEYS.get(key)
        if field is not None:
            values[field] = value
    return values


def _flatten_one_level(document: dict[str, Any]) -> dict[str, Any]:
    """Keys may sit at the top or inside one table (the original kept them in a module table)."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items() if not isinstance(v, dict)})
        else:
            flat[key] = value
    return flat


def load_settings() -> Settings:
    """Build the settings, turning any validation problem into a one-line ConfigError."""
    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"]).upper()
        raise ConfigError(f"invalid setting {name}: {first['msg']}") from None
