from tests.e2e.conftest import system  # noqa: F401 - the running system, shared with e2e
