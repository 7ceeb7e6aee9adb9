"""The worker's lag on each partition of payment-events it holds: records in the log past the
position it will commit (everything below that position is handled), for alerts and scaling.
"""

from __future__ import annotations

from prometheus_client import Gauge

from services.consumer.offsets import LedgerApp

LAG = Gauge(
    "payments_consumer_lag",
    "Records of the partition not yet handled by this worker, per partition it holds",
    ["partition"],
)


def record_lag(app: LedgerApp, topic: str) -> None:
    """Set the gauge for the partitions of `topic` held now, and drop the others'.

    A partition shows once the worker has taken one of its records since it got it (before
    that, the position it would commit is Kafka's, which this worker has not read)."""
    LAG.clear()
    for tp in app.consumer.assignment():
        if tp.topic != topic:
            continue
        highwater = app.consumer.highwater(tp)
        position = app.offsets.safe_position(tp)
        if highwater is None or position is None:
            continue
        LAG.labels(str(tp.partition)).set(max(0, highwater - position))
