"""The notifier's Prometheus metrics (process-wide, served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("payments_notifier_connections", "Open WebSocket connections")
REGISTERED_USERS = Gauge(
    "payments_notifier_registered_users", "Users with at least one registered socket here"
)
SUBSCRIBED_CHANNELS = Gauge(
    "payments_notifier_subscribed_channels", "User channels this process is subscribed to"
)
DELIVERED = Counter(
    "payments_notifier_messages_delivered_total", "Messages written to a socket", ["type"]
)
DROPPED = Counter(
    "payments_notifier_messages_dropped_total",
    "Messages not written: the socket was too slow or already closing",
    ["reason"],
)
REPLAYED = Counter(
    "payments_notifier_messages_replayed_total",
    "Messages sent from history at registration or after a Redis reconnect",
)
REDIS_CONNECTED = Gauge(
    "payments_notifier_redis_connected",
    "1 while the Redis subscriber is connected (riders get live messages), else 0",
)
REDIS_RECONNECTS = Counter(
    "payments_notifier_redis_reconnects", "Times the Redis subscriber connected again"
)
SLOW_CLIENTS = Counter(
    "payments_notifier_slow_clients_total", "Sockets closed because they could not keep up"
)
REFUSED = Counter(
    "payments_notifier_sockets_refused_total",
    "Sockets refused or closed by the notifier's rules: process_limit, user_limit, "
    "registration_timeout, authentication, token_expired, replay_failed",
    ["reason"],
)
