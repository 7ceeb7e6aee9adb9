"""The notifier: pushes payment links and status changes to riders over WebSockets.

Messages come from Redis (shared.bus), so any replica can hold any rider's sockets.
"""
