"""Schemathesis against the API's own OpenAPI schema: no input it can think of gets a 5xx.

The schema is read from /api/schema/ and every operation is called in
process, through the WSGI application, on the test database. Nothing reaches
Docker: the API only writes rows and queues tasks, and nothing runs the queue
in unit tests. /api/health is left out: it takes no input, and it reports the
real lab's state with a 503 by design.
"""

from __future__ import annotations

import string
from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import hosting.wsgi
from sites.models import Site
from sites.services import create_site
from tests.conftest import user_in_group

# Requests Schemathesis made, by operation and status; reported at the end of the module.
answers: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_how_many_requests_were_made(request):
    yield
    by_operation = ", ".join(f"{label} {status}: {n}" for (label, status), n in sorted(answers.items()))
    # Captured output is hidden for passing tests; this line is meant to be seen.
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nschemathesis requests made: {answers.total()} ({by_operation})")


@pytest.fixture(autouse=True)
def connections_kept_open():
    # Django closes the database connection at the end of every request; the
    # test client turns that off (the test's transaction lives on that
    # connection), and so must we when calling the WSGI application directly.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def backups_configured(settings):
    # The same answers with or without the lab's .env: a repository is named
    # (the backup endpoints only open jobs here; nothing runs restic).
    settings.WPFLEET_BACKUP_REPOSITORY = "/nonexistent/restic"
    settings.WPFLEET_BACKUP_PASSWORD = "unused"


@pytest.fixture
def token_header(db) -> dict[str, str]:
    user = user_in_group("fuzzer", "Site operators")
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


# Loaded when the module is collected (Schemathesis' lazy from_fixture does not
# work with pytest 9: it writes Node._nodeid, which pytest no longer has). The
# schema view needs no database.
@pytest.fixture
def seeded_sites(db) -> None:
    """Sites with the short names that generated path parameters often take: letters busy, digits idle.

    Without them nearly every GET or DELETE of /api/sites/{name} is a 404 and
    the code paths behind a found site (202 deprovision, 409 busy) go untried.
    """
    for name in string.ascii_lowercase + string.digits:
        site = create_site(name)
        if name.isdigit():
            Site.objects.filter(pk=site.pk).update(current_job=None, status=Site.Status.ACTIVE)


# Left out: health (it probes the lab), and the two calls that run PHP inside
# a site's container, which answer 503 without the lab by design (the lab
# tests in tests/integration/test_wordpress_access.py cover them).
schema = (
    schemathesis.openapi.from_wsgi("/api/schema/", hosting.wsgi.application)
    .exclude(path="/api/health")
    .exclude(path_regex=r"/(admin-password|login-link)$")
)


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@schema.parametrize()
def test_no_generated_request_gets_a_server_error_and_responses_match_the_schema(case, token_header, seeded_sites):
    # Hundreds of requests from one token: keep the rate limit out of the way
    # (it has its own test) by starting every call from a zero count.
    cache.clear()
    response = case.call(headers=token_header)
    answers[(case.operation.label, response.status_code)] += 1
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
