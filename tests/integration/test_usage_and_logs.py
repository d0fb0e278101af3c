"""On the real lab: a site's usage read in bulk from the host (sites.ops.usage) and its logs (sites.ops.logs)."""

from __future__ import annotations

import secrets
import time

import pytest
from django.conf import settings

from sites.models import Site
from sites.ops.logs import site_logs
from sites.ops.usage import collect_usage
from sites.ops.wordpress import login_link
from tests.integration.conftest import _front, fetch, wait_for

pytestmark = [pytest.mark.integration]


@pytest.fixture
def live_site(make_site) -> Site:
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    return site


def test_usage_is_read_from_the_host_and_requests_and_logs_show_a_visit(live_site, infra, tmp_path, api):
    site = live_site
    state = tmp_path / "usage.json"

    report = collect_usage(force=True, docker=infra.docker, state_path=state)
    assert report["containers"] >= 2 and report["problems"] == [], report
    site.refresh_from_db()
    assert site.usage_memory is not None and site.usage_memory > 0
    assert site.usage_at is not None
    assert site.usage_cpu is None  # the first reading: nothing to compare with yet
    if settings.WPFLEET_QUOTA_ROOT:
        # The site's files, as its quota counts them (sites.infra.quota; btrfs
        # counts a write at its next commit: a new site may still show 0).
        assert site.usage_disk is not None and site.usage_disk >= 0
    else:
        assert site.usage_disk is None
    before = site.usage_requests
    assert before is not None and before >= 1  # the live check of provisioning came through nginx

    # A visit through Caddy shows in nginx's access log, and in the count.
    marker = secrets.token_hex(8)
    answer = fetch(site.name, f"/?usage-probe={marker}")
    assert answer.status_code == 200, answer.status_code
    found = wait_for(
        lambda: [line for line in site_logs(site, "nginx", 20) if marker in line], 10, message="the visit in the log"
    )
    assert f"GET /?usage-probe={marker} " in found[0]
    assert found[0][:4].isdigit() and "T" in found[0][:20]  # each line after its timestamp
    # The same through the API, as an operator asks for it.
    shown = api.get(f"/api/sites/{site.name}/logs?source=nginx&lines=20")
    assert shown.status_code == 200, shown.content
    assert shown.json()["log"] == "nginx"
    assert any(f"GET /?usage-probe={marker} " in line for line in shown.json()["lines"])

    time.sleep(1)
    collect_usage(force=True, docker=infra.docker, state_path=state)
    site.refresh_from_db()
    assert site.usage_requests is not None and site.usage_requests >= before + 1
    assert site.usage_cpu is not None and site.usage_cpu >= 0  # two readings now
    assert site.usage_memory is not None and site.usage_memory > 0


def test_php_logs_and_the_bounds_of_lines(live_site):
    site = live_site
    lines = site_logs(site, "php", 5)
    assert 1 <= len(lines) <= 5
    with pytest.raises(ValueError, match="lines must be"):
        site_logs(site, "php", 0)
    with pytest.raises(ValueError, match="lines must be"):
        site_logs(site, "nginx", settings.WPFLEET_LOG_LINES_MAX + 1)
    with pytest.raises(ValueError, match="source must be"):
        site_logs(site, "mariadb", 5)


def test_a_login_link_never_shows_in_the_logs(live_site, infra):
    site = live_site
    link = login_link(site, infra)
    token = link.url.split("wpfleet_login=", 1)[1]
    answer = _front().get(site.domain, link.url.split(site.domain, 1)[1])
    assert answer.status_code == 302, answer.status_code  # used: logged in, sent to wp-admin
    marker = secrets.token_hex(8)
    fetch(site.name, f"/?after={marker}")
    wait_for(
        lambda: any(f"after={marker}" in line for line in site_logs(site, "nginx", 50)), 10, message="the next visit"
    )
    nginx, php = site_logs(site, "nginx", 50), site_logs(site, "php", 50)
    assert not [line for line in nginx if "wpfleet_login" in line]  # the request is not written at all
    assert not [line for line in nginx + php if token in line]
