"""The page cache without the lab: what the API and the admin refuse, and the server block nginx gets."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from jobs.models import Job
from sites.models import Site
from sites.models.naming import SiteNames
from sites.provisioning.templates import CACHE_PLUGIN, PAGE_CACHE_DIR, nginx_server_block
from tests.conftest import token_client, user_in_group

pytestmark = pytest.mark.django_db(transaction=True)


def active_site(name: str) -> Site:
    return Site.objects.create(name=name, domain=f"{name}.wpfleet.test", status=Site.Status.ACTIVE)


# --- the API -----------------------------------------------------------------------


def test_turning_the_cache_off_opens_a_settings_job_and_the_site_keeps_its_setting_until_it_is_done(api):
    active_site("alpha")
    answer = api.patch("/api/sites/alpha", {"page_cache": False}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["page_cache"] is True  # what is served now
    job = Job.objects.get(pk=body["job"]["id"])
    assert (job.type, job.params) == (Site.JobType.SETTINGS, {"page_cache": False})
    assert Site.objects.get(name="alpha").current_job == job


def test_asking_for_the_setting_a_site_already_has_changes_nothing(api):
    active_site("alpha")
    answer = api.patch("/api/sites/alpha", {"page_cache": True}, format="json")
    assert answer.status_code == 200 and answer.json()["page_cache"] is True
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "body,code",
    [
        ({}, "required"),
        ({"page_cache": "maybe"}, "invalid"),
        ({"page_cache": None}, "null"),
        ({"page_cache": False, "php_versions": "8.4"}, "unknown_field"),
        ([{"page_cache": False}], "parse_error"),
    ],
)
def test_a_bad_settings_body_is_refused_and_opens_no_job(api, body, code):
    active_site("alpha")
    answer = api.patch("/api/sites/alpha", body, format="json")
    assert (answer.status_code, answer.json()["code"]) == (400, code)
    assert not Job.objects.exists()
    assert Site.objects.get(name="alpha").page_cache is True


def test_a_purge_opens_a_purge_job(api):
    active_site("alpha")
    answer = api.post("/api/sites/alpha/purge-cache")
    assert answer.status_code == 202
    assert Job.objects.get(pk=answer.json()["id"]).type == Site.JobType.PURGE_CACHE


def test_a_site_that_is_not_active_or_is_busy_can_be_neither_purged_nor_reconfigured(api):
    Site.objects.create(name="alpha", domain="alpha.wpfleet.test")  # still provisioning
    busy = active_site("beta")
    busy.open_job(Site.JobType.BACKUP)
    for name, code in (("alpha", "not_active"), ("beta", "busy")):
        for answer in (
            api.post(f"/api/sites/{name}/purge-cache"),
            api.patch(f"/api/sites/{name}", {"page_cache": False}, format="json"),
        ):
            assert (answer.status_code, answer.json()["code"]) == (409, code), name
    assert Job.objects.count() == 1
    assert api.post("/api/sites/nobody/purge-cache").status_code == 404


def test_viewers_can_neither_purge_nor_change_the_cache(db):
    active_site("alpha")
    viewer = token_client(user_in_group("viewer", "Site viewers"))
    assert viewer.get("/api/sites/alpha").json()["page_cache"] is True
    assert viewer.post("/api/sites/alpha/purge-cache").status_code == 403
    assert viewer.patch("/api/sites/alpha", {"page_cache": False}, format="json").status_code == 403
    assert not Job.objects.exists()


# --- the admin ---------------------------------------------------------------------


def test_the_sites_page_offers_the_cache_buttons_that_start_jobs_by_post_only(admin_client):
    site = active_site("alpha")
    page = admin_client.get(reverse("admin:sites_site_change", args=[site.pk])).content.decode()
    assert "Turn the page cache off" in page and "Purge every page now" in page
    purge = reverse("admin:sites_site_page_cache", args=[site.pk, "purge"])
    assert admin_client.get(purge).status_code == 403
    assert not Job.objects.exists()
    assert admin_client.post(purge).status_code == 302
    assert Job.objects.get().type == Site.JobType.PURGE_CACHE


def test_the_admin_turns_the_cache_off_through_the_same_service(admin_client):
    site = active_site("alpha")
    response = admin_client.post(reverse("admin:sites_site_page_cache", args=[site.pk, "off"]), follow=True)
    assert "Turning the page cache off" in response.content.decode()
    assert Job.objects.get().params == {"page_cache": False}


def test_a_viewer_sees_the_cache_state_without_buttons_and_cannot_post(client, db):
    site = active_site("alpha")
    viewer = user_in_group("viewer", "Site viewers")
    viewer.is_staff = True
    viewer.save()
    client.force_login(viewer)
    page = client.get(reverse("admin:sites_site_change", args=[site.pk])).content.decode()
    assert "Page cache" in page and "Purge every page now" not in page
    assert client.post(reverse("admin:sites_site_page_cache", args=[site.pk, "purge"])).status_code == 403
    assert not Job.objects.exists()


# --- what nginx and the purge plugin agree on ------------------------------------------


def test_the_cache_key_is_scheme_method_host_path_and_gzip_and_the_plugin_builds_names_of_the_same_parts():
    block = nginx_server_block(SiteNames("alpha"))
    assert 'fastcgi_cache_key "$http_x_forwarded_proto$request_method$host$request_uri$wpfleet_gzip";' in block
    # PHP is told gzip or nothing: two forms of a page at most.
    assert "fastcgi_param HTTP_ACCEPT_ENCODING $wpfleet_gzip;" in block
    assert f"fastcgi_cache_path {PAGE_CACHE_DIR} " in block and "levels=" not in block
    # The plugin names a page's file by the same key, for the https pages Caddy forwards
    # (that it deletes the right file is shown on the lab, tests/integration/test_page_cache.py).
    assert "md5('https' . $method . $host . $one . $encoding)" in CACHE_PLUGIN
    assert "foreach (['', 'gzip'] as $encoding)" in CACHE_PLUGIN


def test_without_the_cache_the_server_block_has_no_cache_directive():
    block = nginx_server_block(SiteNames("alpha"), page_cache=False)
    assert "fastcgi_cache" not in block and "X-Cache" not in block
    assert "fastcgi_pass 127.0.0.1:9000;" in block


def test_every_private_signal_both_bypasses_and_skips_storing():
    block = nginx_server_block(SiteNames("alpha"))
    bypass = re.search(r"fastcgi_cache_bypass (.+);", block).group(1).split()
    no_cache = re.search(r"fastcgi_no_cache (.+);", block).group(1).split()
    # Not stored either: an answer that varies on more than gzip (known only once PHP answered).
    assert no_cache == [*bypass, "$wpfleet_skip_vary"]
    assert "fastcgi_ignore_headers Vary;" in block
    assert {"$http_authorization", "$http_x_wp_nonce", "$wpfleet_skip_cookie", "$wpfleet_skip_args"} <= set(bypass)
    for cookie in ("wordpress_logged_in_", "wp-postpass_", "comment_author_", "woocommerce_items_in_cart"):
        assert cookie in block
