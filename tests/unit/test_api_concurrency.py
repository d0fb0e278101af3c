"""Simultaneous requests through a real HTTP server: one name, one site, whoever asks at the same time.

The test client runs requests one after another on the test's own database
connection; only a real server, one thread and one connection per request,
lets requests race in the database as they do under gunicorn. A barrier
releases all the requests at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.cache import cache
from django_q.models import OrmQ
from rest_framework.authtoken.models import Token

from jobs.models import Job
from sites.models import Site
from tests.conftest import unique_name, user_in_group

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token_header(transactional_db) -> dict[str, str]:
    cache.clear()  # the throttle's counts live in the cache, which outlives the database
    user = user_in_group("racer", "Site operators")
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def server(live_server):
    """pytest-django's live server, able to take fifty connections at once.

    Django's test server listens with a backlog of 10 (WSGIServer.
    request_queue_size); fifty simultaneous connects overflow it and the
    kernel resets some of them before the application sees a byte. gunicorn
    listens with 2048. Calling listen() again on the running server's socket
    raises its backlog (Linux), so that these tests measure the application,
    not the test server's accept queue.
    """
    live_server.thread.httpd.socket.listen(128)
    return live_server


def post_at_once(url: str, headers: dict[str, str], names: list[str]) -> list[requests.Response]:
    """POST one request per name, all released together, each on its own connection."""
    barrier = threading.Barrier(len(names))

    def post(name: str) -> requests.Response:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            return session.post(url, json={"site": name}, headers=headers, timeout=120)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(post, names))


def describe(responses: list[requests.Response]) -> str:
    """What came back, for the failure message: statuses and the first body of each."""
    firsts: dict[int, str] = {}
    for response in responses:
        firsts.setdefault(response.status_code, response.text[:200])
    return f"{Counter(r.status_code for r in responses)} {firsts}"


def test_fifty_simultaneous_posts_of_one_name_create_it_once_and_tell_the_others_409(server, token_header):
    name = unique_name("race")
    responses = post_at_once(f"{server.url}/api/sites", token_header, [name] * 50)

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {202: 1, 409: 49}, describe(responses)
    for response in responses:
        assert response.headers["Content-Type"] == "application/json"
        if response.status_code == 409:
            assert response.json()["code"] == "taken"
    # One site, one job, one queued task: the losers left nothing behind.
    assert list(Site.objects.values_list("name", flat=True)) == [name]
    assert Job.objects.count() == 1 and OrmQ.objects.count() == 1


def test_twenty_simultaneous_posts_of_different_names_all_succeed(server, token_header):
    names = [unique_name("many") for _ in range(20)]
    responses = post_at_once(f"{server.url}/api/sites", token_header, names)

    assert [response.status_code for response in responses] == [202] * 20, describe(responses)
    assert sorted(Site.objects.values_list("name", flat=True)) == sorted(names)
    assert Job.objects.count() == OrmQ.objects.count() == 20
    # Each site is held by its own PROVISION job.
    assert all(site.current_job.subject_id == site.pk for site in Site.objects.select_related("current_job"))
