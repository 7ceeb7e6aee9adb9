"""Benchmarks: scripts that start the parts, drive a service and print numbers."""
