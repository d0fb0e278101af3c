# The fixtures of the integration tests (lab, make_site, clusters) serve here too.
from tests.integration.conftest import infra, make_site, worker_cluster  # noqa: F401
