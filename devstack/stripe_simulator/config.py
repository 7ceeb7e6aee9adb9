"""Static settings of one simulator instance."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rate_limits import RateLimitSettings


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulator presents itself and delivers webhooks.

    `public_base_url` is the origin put into Checkout URLs; when None it is taken from each
    request's Host, which suits a server bound to a port chosen at start. `state_file`, when
    set, keeps the state on disk across restarts. `api_key`, when
    set, is the only key accepted; otherwise any `sk_`/`rk_` key is. `webhook_secret` may
    hold several comma-separated secrets: every delivery is signed with each of them.
    """

    public_base_url: str | None = None
    api_key: str | None = None
    webhook_url: str | None = None
    webhook_secret: str = "whsec_simulator"
    latency_ms: int = 0
    webhook_max_attempts: int = 8
    webhook_initial_backoff_s: float = 0.2
    webhook_max_backoff_s: float = 5.0
    webhook_timeout_s: float = 10.0
    expiry_sweep_s: float = 1.0
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    state_file: str | None = None

    def __post_init__(self) -> None:
        if self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be at least 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if self.public_base_url is not None:
            object.__setattr__(self, "public_base_url", self.public_base_url.rstrip("/"))
