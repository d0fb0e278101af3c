"""The browser tests drive the same real lab as the integration tests, with their fixtures."""

from tests.integration.conftest import infra, worker_cluster  # noqa: F401  (fixtures shared with integration)
