"""On the real lab: nginx's page cache in front of a site's PHP, and its purge (issue #15).

Every request goes through Caddy over HTTPS, as a visitor's would. A change
made with SQL behind WordPress's back (``sql_set_tagline``) fires no hook,
so no purge: it shows whether a page came from the cache or from PHP.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from jobs.models import Job
from sites.infra.caddy import Answer
from sites.models import Site
from sites.ops.wordpress import LOAD_WORDPRESS
from sites.provisioning.steps import purge_page_cache
from sites.provisioning.templates import CACHE_PLUGIN, CACHE_PLUGIN_PATH, PAGE_CACHE_DIR, PAGE_CACHE_HOSTS
from tests.integration.conftest import _front, fetch, run_to_end

pytestmark = [pytest.mark.integration]


@pytest.fixture
def live_site(make_site, infra) -> Site:
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    # The live check of provisioning fetched the home page: start from an empty cache.
    purge_page_cache(infra.docker, site.names)
    return site


def wordpress(infra, site: Site, code: str, **env: str) -> str:
    """Run PHP in the site's container with WordPress loaded (as a request for its URL would), as www-data.

    ``env`` reaches the code as environment variables (getenv).
    """
    status, output = infra.docker.exec(
        site.names.php,
        ["php", "-r", LOAD_WORDPRESS + code],
        user="www-data",
        environment={"WPFLEET_HOST": site.domain, **env},
    )
    assert status == 0, output
    return output


def sql_set_tagline(infra, site: Site, tagline: str) -> None:
    """Change the tagline (shown on the home page) in the database only: no WordPress hook runs."""
    wordpress(
        infra,
        site,
        "global $wpdb; $wpdb->update($wpdb->options, ['option_value' => getenv('TAGLINE')],"
        " ['option_name' => 'blogdescription']);",
        TAGLINE=tagline,
    )


def cache_state(answer: Answer) -> str:
    return answer.headers.get("X-Cache", "")


def anonymous_home(site: Site, gzip: bool = False) -> Answer:
    if gzip:
        answer = _front().request("GET", site.domain, "/", headers={"Accept-Encoding": "gzip, deflate, br"})
        assert answer.headers.get("Content-Encoding") == "gzip", answer.headers
    else:
        answer = fetch(site.name, "/")
        assert "Content-Encoding" not in answer.headers, answer.headers
    assert answer.status_code == 200, answer.status_code
    return answer


def admin_cookies(api, infra, site: Site) -> str:
    """Log in as the site's admin (a new password through the API, then wp-login.php): the Cookie header."""
    credentials = api.post(f"/api/sites/{site.name}/admin-password").json()
    answer = infra.caddy.request(
        "POST",
        site.domain,
        "/wp-login.php",
        fields={"log": credentials["username"], "pwd": credentials["password"], "testcookie": "1"},
        headers={"Cookie": "wordpress_test_cookie=WP%20Cookie%20check"},
    )
    assert answer.status_code == 302, answer.status_code
    pairs = [cookie.split(";", 1)[0] for cookie in answer.cookies]
    assert any(pair.startswith("wordpress_logged_in_") for pair in pairs), pairs
    return "; ".join(pairs)


def test_the_purge_plugin_is_installed_and_the_cache_directory_is_the_sites_own(live_site, infra):
    assert infra.docker.read_file(live_site.names.php, CACHE_PLUGIN_PATH) == CACHE_PLUGIN
    status, output = infra.docker.exec(live_site.names.php, ["php", "-l", CACHE_PLUGIN_PATH])
    assert status == 0, output
    # The same volume in nginx (which writes) and PHP (which deletes): not in the site's files.
    anonymous_home(live_site)
    assert cache_state(anonymous_home(live_site)) == "HIT"
    status, listing = infra.docker.exec(live_site.names.php, ["ls", PAGE_CACHE_DIR])
    assert status == 0 and re.search(r"^[0-9a-f]{32}$", listing, re.M), listing
    status, _ = infra.docker.exec(live_site.names.php, ["test", "-e", "/var/www/html/pages"])
    assert status != 0
    # The hostnames under which the plugin purges a changed page.
    assert infra.docker.read_file(live_site.names.php, PAGE_CACHE_HOSTS) == f"{live_site.domain}\n"


def test_an_anonymous_page_is_a_miss_then_a_hit_served_without_php_compressed_or_not(live_site, infra):
    first, first_gzip = anonymous_home(live_site), anonymous_home(live_site, gzip=True)
    assert cache_state(first) == cache_state(first_gzip) == "MISS"
    sql_set_tagline(infra, live_site, "Changed behind the cache")
    second, second_gzip = anonymous_home(live_site), anonymous_home(live_site, gzip=True)
    assert cache_state(second) == cache_state(second_gzip) == "HIT"
    assert "Changed behind the cache" not in second.text and second.text == first.text == second_gzip.text
    # Browsers spell Accept-Encoding many ways: one copy for all that take gzip (the purge knows its name).
    for spelling in ("gzip", "gzip, deflate, br, zstd", "deflate, gzip;q=0.8"):
        other = _front().request("GET", live_site.domain, "/", headers={"Accept-Encoding": spelling})
        assert (cache_state(other), other.headers.get("Content-Encoding")) == ("HIT", "gzip"), spelling


def test_a_logged_in_visitor_always_reaches_php_and_never_fills_the_cache(live_site, api, infra):
    cookies = admin_cookies(api, infra, live_site)
    anonymous_home(live_site)
    assert cache_state(anonymous_home(live_site)) == "HIT"
    for _ in range(2):
        mine = infra.caddy.request("GET", live_site.domain, "/", headers={"Cookie": cookies})
        assert mine.status_code == 200 and cache_state(mine) == "BYPASS"
        assert 'id="wpadminbar"' in mine.text
    visitor = anonymous_home(live_site)
    assert cache_state(visitor) == "HIT" and 'id="wpadminbar"' not in visitor.text


def test_crafted_cookies_and_query_strings_never_make_a_private_page_cacheable(live_site, api, infra):
    cookies = admin_cookies(api, infra, live_site)
    logged_in = next(pair for pair in cookies.split("; ") if pair.startswith("wordpress_logged_in_"))
    name, value = logged_in.split("=", 1)
    # Forms of the cookie's name that no cookie rule of nginx names: PHP turns
    # "." into "_" (it reads the first as the real cookie); it no longer
    # decodes %XX in names (CVE-2022-31629), but might elsewhere.
    disguised = [
        name.replace("wordpress_logged_in_", "wordpress.logged.in.") + "=" + value,
        name.replace("_", "%5F") + "=" + value,
        name.replace("wordpress", "%77ordpress") + "=" + value,
    ]
    personalized = []
    for cookie in disguised:
        # The first request for the page since a purge: its answer is the one that would be stored.
        purge_page_cache(infra.docker, live_site.names)
        private = infra.caddy.request("GET", live_site.domain, "/", headers={"Cookie": cookie})
        assert private.status_code == 200 and cache_state(private) == "MISS"
        visitor = anonymous_home(live_site)
        assert 'id="wpadminbar"' not in visitor.text, f"the logged-in page for {cookie.split('=')[0]} was stored"
        if 'id="wpadminbar"' in private.text:
            personalized.append(cookie.split("=")[0])
            assert cache_state(visitor) == "MISS"
    # WordPress took at least one disguise for the real cookie: the backstop was needed, and held.
    assert personalized
    for path in ("/?", "/?s=x", "/?preview=true", "/wp-login.php", "/?rest_route=/", "/wp-admin/", "/wp-%61dmin/"):
        for _ in range(2):
            answer = fetch(live_site.name, path)
            assert cache_state(answer) in ("BYPASS", ""), (path, cache_state(answer))
    for cookie in ("comment_author_abc=me", "wp-postpass_abc=x", "woocommerce_items_in_cart=1"):
        answer = infra.caddy.request("GET", live_site.domain, "/", headers={"Cookie": cookie})
        assert cache_state(answer) == "BYPASS", cookie


def test_another_sites_host_or_a_forged_scheme_never_reads_or_writes_this_sites_cache(make_site, infra):
    first, second = make_site(), make_site()
    for site in (first, second):
        anonymous_home(site)
        assert cache_state(anonymous_home(site)) == "HIT"
    forged = {
        "X-Forwarded-Host": second.domain,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-For": "10.0.0.1",
        "Forwarded": f"host={second.domain};proto=http",
    }
    answer = infra.caddy.request("GET", first.domain, "/", headers=forged)
    assert answer.status_code == 200 and cache_state(answer) == "HIT"
    assert f"https://{first.domain}/" in answer.text and second.domain not in answer.text
    # Caddy's strict SNI: another site's Host on this site's connection is refused.
    assert infra.caddy.request("GET", first.domain, "/", headers={"Host": second.domain}).status_code == 421
    for site, other in ((first, second), (second, first)):
        page = anonymous_home(site)
        assert f"https://{site.domain}/" in page.text and other.domain not in page.text


def test_a_post_edited_through_wordpress_is_fresh_on_the_next_request(live_site, infra):
    # An application password: the REST API as a script or the block editor would use it.
    user, password = json.loads(
        wordpress(
            infra,
            live_site,
            "$user = get_user_by('login', getenv('ADMIN'));"
            "list($password) = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => 't']);"
            "echo json_encode([$user->user_login, $password]);",
            ADMIN=live_site.admin_user,
        ).splitlines()[-1]
    )
    for gzip in (False, True):
        anonymous_home(live_site, gzip)
        assert cache_state(anonymous_home(live_site, gzip)) == "HIT"
    # The post's own page: a path (pretty permalinks), cached too.
    fetch(live_site.name, "/hello-world/")
    assert cache_state(fetch(live_site.name, "/hello-world/")) == "HIT"
    sql_set_tagline(infra, live_site, "Seen only after a purge")

    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    edited = infra.caddy.request(
        "POST",
        live_site.domain,
        "/?rest_route=/wp/v2/posts/1",
        fields={"title": "Edited through the REST API"},
        headers={"Authorization": f"Basic {auth}"},
    )
    assert edited.status_code == 200, edited.text[:300]
    assert cache_state(edited) == "BYPASS"

    for gzip in (False, True):
        fresh = anonymous_home(live_site, gzip)
        assert cache_state(fresh) == "MISS"
        assert "Edited through the REST API" in fresh.text and "Seen only after a purge" in fresh.text
        assert cache_state(anonymous_home(live_site, gzip)) == "HIT"
    post = fetch(live_site.name, "/hello-world/")
    assert cache_state(post) == "MISS" and "Edited through the REST API" in post.text


def test_an_approved_comment_purges_its_post_and_the_home_page(live_site, infra):
    anonymous_home(live_site)
    assert cache_state(anonymous_home(live_site)) == "HIT"
    sql_set_tagline(infra, live_site, "After the comment")
    wordpress(
        infra,
        live_site,
        "wp_insert_comment(['comment_post_ID' => 1, 'comment_content' => 'Nice', 'comment_approved' => 1]);",
    )
    fresh = anonymous_home(live_site)
    assert cache_state(fresh) == "MISS" and "After the comment" in fresh.text


def test_the_api_turns_the_cache_off_and_on_and_purges_it(live_site, api, infra):
    anonymous_home(live_site)
    assert cache_state(anonymous_home(live_site)) == "HIT"

    # Off: every request reaches PHP, so a change behind WordPress's back shows at once.
    response = api.patch(f"/api/sites/{live_site.name}", {"page_cache": False}, format="json")
    assert response.status_code == 202, response.content
    job = run_to_end(response.json()["job"]["id"])
    assert job.status == Job.Status.DONE, job.error
    live_site.refresh_from_db()
    assert live_site.page_cache is False and api.get(f"/api/sites/{live_site.name}").json()["page_cache"] is False
    for tagline in ("Uncached one", "Uncached two"):
        sql_set_tagline(infra, live_site, tagline)
        answer = anonymous_home(live_site)
        assert cache_state(answer) == "" and tagline in answer.text
    assert api.patch(f"/api/sites/{live_site.name}", {"page_cache": False}, format="json").status_code == 200

    # On again: nothing from before comes back, then pages are cached again.
    response = api.patch(f"/api/sites/{live_site.name}", {"page_cache": True}, format="json")
    assert response.status_code == 202
    assert run_to_end(response.json()["job"]["id"]).status == Job.Status.DONE
    assert cache_state(anonymous_home(live_site)) == "MISS"
    sql_set_tagline(infra, live_site, "Stale until purged")
    assert "Stale until purged" not in anonymous_home(live_site).text

    response = api.post(f"/api/sites/{live_site.name}/purge-cache")
    assert response.status_code == 202, response.content
    assert run_to_end(response.json()["id"]).status == Job.Status.DONE
    fresh = anonymous_home(live_site)
    assert cache_state(fresh) == "MISS" and "Stale until purged" in fresh.text
