"""Local development stack: simulators and helpers for tests and the local environment."""
