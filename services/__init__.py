"""The three deployable processes: consumer, webhook and notifier."""
