"""On the real lab: a site over HTTPS, a new admin password that WordPress accepts, one-click login links.

Every request goes through Caddy over HTTPS to the site's hostname, with the
certificate checked against the lab's CA (``fetch`` and ``Caddy.request``).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from urllib.parse import urlsplit

import pytest
from django.contrib.admin.models import LogEntry

from jobs.models import Job, JobStep
from sites.infra.caddy import Answer
from sites.models import Site
from sites.provisioning.steps import observe_site
from sites.provisioning.templates import LOGIN_PLUGIN, LOGIN_PLUGIN_PATH
from tests.conftest import token_client, unique_name, user_in_group
from tests.integration.conftest import fetch, fetch_plain_http

pytestmark = [pytest.mark.integration]


@pytest.fixture
def live_site(make_site) -> Site:
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    return site


def log_in(infra, site: Site, username: str, password: str) -> Answer:
    """What a browser does on wp-login.php: the test cookie, then the form."""
    return infra.caddy.request(
        "POST",
        site.domain,
        "/wp-login.php",
        fields={"log": username, "pwd": password, "wp-submit": "Log In", "testcookie": "1"},
        headers={"Cookie": "wordpress_test_cookie=WP%20Cookie%20check"},
    )


def logged_in(answer: Answer) -> bool:
    """A 302 into wp-admin that sets WordPress's logged-in cookie, marked Secure."""
    cookies = [cookie for cookie in answer.cookies if cookie.startswith("wordpress_logged_in_")]
    return (
        answer.status_code == 302
        and "/wp-admin" in answer.headers.get("Location", "")
        and bool(cookies)
        and all("secure" in cookie.lower() for cookie in cookies)
    )


# --- HTTPS -------------------------------------------------------------------------


def test_plain_http_redirects_to_https_and_the_pages_stylesheets_come_over_https(live_site, infra):
    redirect = fetch_plain_http(live_site.name, "/sample-page/?x=1")
    assert redirect.status_code == 308
    assert redirect.headers["Location"] == f"https://{live_site.domain}/sample-page/?x=1"

    # A TLS session for this site cannot ask Caddy for another host (strict SNI).
    other = f"{unique_name('x')}.{live_site.domain.split('.', 1)[1]}"
    assert infra.caddy.request("GET", live_site.domain, "/", headers={"Host": other}).status_code == 421

    home = fetch(live_site.name, "/")
    assert home.status_code == 200
    stylesheets = re.findall(r"<link rel='stylesheet'[^>]*href='([^']+)'", home.text)
    assert stylesheets, "the home page links stylesheets"
    for url in stylesheets:
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname) == ("https", live_site.domain), url
        css = fetch(live_site.name, parts.path + (f"?{parts.query}" if parts.query else ""))
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css"), url


# --- a new admin password --------------------------------------------------------------


def test_a_new_admin_password_is_shown_once_and_wordpress_accepts_it_and_refuses_the_one_before(
    live_site, api, infra, caplog
):
    response = api.post(f"/api/sites/{live_site.name}/admin-password")
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    first = response.json()
    assert first["username"] == live_site.admin_user and len(first["password"]) == 24
    assert logged_in(log_in(infra, live_site, first["username"], first["password"]))

    second = api.post(f"/api/sites/{live_site.name}/admin-password").json()
    assert second["password"] != first["password"]
    assert logged_in(log_in(infra, live_site, second["username"], second["password"]))
    refused = log_in(infra, live_site, first["username"], first["password"])
    assert refused.status_code == 200 and not logged_in(refused)

    # Kept nowhere: not in the site's row, its jobs, or the panel's log.
    passwords = (first["password"], second["password"])
    rows = [str(value) for value in Site.objects.filter(pk=live_site.pk).values().first().values()]
    rows += [str(values) for values in Job.objects.values_list("error", "traceback", "subject_name")]
    rows += [str(values) for values in JobStep.objects.values_list("name", "error")]
    assert not any(password in row for password in passwords for row in rows)
    assert not any(password in caplog.text for password in passwords)


def test_a_viewer_cannot_set_a_password_or_get_a_login_link(live_site):
    viewer = token_client(user_in_group("viewer", "Site viewers"))
    for path in ("admin-password", "login-link"):
        response = viewer.post(f"/api/sites/{live_site.name}/{path}")
        assert response.status_code == 403 and response.json()["code"] == "permission_denied", path


# --- one-click login --------------------------------------------------------------------


def seconds_until(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - time.time()


def follow_link(infra, url: str) -> Answer:
    parts = urlsplit(url)
    return infra.caddy.request("GET", parts.hostname, f"{parts.path}?{parts.query}")


def test_a_login_link_opens_wp_admin_once_and_never_again(live_site, api, infra):
    response = api.post(f"/api/sites/{live_site.name}/login-link")
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    link = response.json()
    assert link["url"].startswith(f"https://{live_site.domain}/wp-login.php?wpfleet_login=")
    assert 55 <= seconds_until(link["expires_at"]) <= 60

    first = follow_link(infra, link["url"])
    assert logged_in(first), (first.status_code, first.headers, first.cookies)
    # The cookie it set opens wp-admin: WordPress's dashboard, as the site's admin.
    cookie = "; ".join(c.split(";", 1)[0] for c in first.cookies)
    dashboard = infra.caddy.request("GET", live_site.domain, "/wp-admin/", headers={"Cookie": cookie})
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
    # Nobody is meant to know the install's password: WordPress does not nag about it.
    assert "auto-generated password" not in dashboard.text

    again = follow_link(infra, link["url"])
    assert again.status_code == 302 and again.headers["Location"].endswith("/wp-login.php")
    assert not logged_in(again)


def test_a_login_link_with_a_changed_signature_opens_nothing(live_site, api, infra):
    url = api.post(f"/api/sites/{live_site.name}/login-link").json()["url"]
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert not logged_in(follow_link(infra, forged))


def test_a_login_link_expires(live_site, api, infra, settings):
    settings.WPFLEET_LOGIN_LINK_SECONDS = 5  # the shortest allowed; 60 by default
    url = api.post(f"/api/sites/{live_site.name}/login-link").json()["url"]
    time.sleep(6)
    answer = follow_link(infra, url)
    assert answer.status_code == 302 and not logged_in(answer)


def test_a_login_link_for_a_site_that_is_not_active_is_409_and_one_for_no_site_is_404(make_site, api):
    site = make_site(run=False)
    assert site.status == Site.Status.PROVISIONING
    before = LogEntry.objects.count()
    response = api.post(f"/api/sites/{site.name}/login-link")
    assert response.status_code == 409 and response.json()["code"] == "not_active"
    assert api.post(f"/api/sites/{site.name}/admin-password").status_code == 409
    assert api.post("/api/sites/nosuchsite/login-link").status_code == 404
    assert LogEntry.objects.count() == before


def test_a_removed_login_plugin_shows_as_drift_and_the_next_login_link_puts_it_back(live_site, api, infra):
    path = LOGIN_PLUGIN_PATH
    assert infra.docker.read_file(live_site.names.php, path) == LOGIN_PLUGIN
    infra.docker.exec(live_site.names.php, ["rm", path], user="www-data")
    assert [str(r) for r in observe_site(live_site.name, infra) if r.needs_repair] == [
        f"WordPress install {live_site.names.database} wpfleet's plugin missing or changed: wpfleet-login.php"
    ]
    assert logged_in(follow_link(infra, api.post(f"/api/sites/{live_site.name}/login-link").json()["url"]))
    assert infra.docker.read_file(live_site.names.php, path) == LOGIN_PLUGIN
