from tests.e2e.conftest import own_kafka  # noqa: F401 - a broker of the test's own
