"""An operator's round trip in a real browser: add a site in the admin, watch it
go live without reloading, visit the installed WordPress through Caddy, delete it again.

Headless Chromium (Debian's package) driven by Playwright, against the live
test server, a real worker cluster and the real lab.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect, sync_playwright

from jobs.models import Job
from sites.models import Site
from sites.models.validation import NAME_RULE
from tests.conftest import unique_name
from tests.integration.conftest import force_remove, leftovers

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(600)]

ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


def chromium_args() -> list[str]:
    caddy = urlsplit(settings.WPFLEET_CADDY_URL).netloc
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        # Every site's hostname, on port 80, reaches the lab's Caddy: DNS for
        # the base domain without touching the machine's resolver.
        f"--host-resolver-rules=MAP *.{settings.WPFLEET_BASE_DOMAIN} {caddy}",
        # The lab has no TLS: a silent upgrade of the site link to https would fail.
        "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
    ]


@pytest.fixture
def browser(monkeypatch) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: lab/up.sh installs Debian's chromium package")
    # Sync Playwright keeps an event loop running in this thread, which
    # Django's guard takes for async code; the ORM calls made between browser
    # steps are plain blocking calls, one at a time, so the guard is lifted
    # for this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args(), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def operator() -> tuple[str, str]:
    password = secrets.token_urlsafe(16)
    get_user_model().objects.create_superuser("operator", "operator@example.test", password)
    return "operator", password


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_an_operator_adds_a_site_watches_it_go_live_visits_it_and_deletes_it(
    live_server, worker_cluster, infra, browser, operator, settings
):
    # scripts/test.sh sets it for the whole run; pinned here so the link works whoever runs the test.
    settings.WPFLEET_SITE_URL_SCHEME = "http"
    name = unique_name("br")
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(live_server.url + "/admin/")
        page.fill("#id_username", operator[0])
        page.fill("#id_password", operator[1])
        page.click("input[type=submit]")
        expect(page.locator("#site-name")).to_contain_text("wpfleet")

        page.locator("#content-main #sites-site").get_by_role("link", name="Sites", exact=True).click()
        page.get_by_role("link", name="Add site").click()

        # A bad name is refused with the API's own message, and nothing is written.
        page.fill("#id_name", "Not-A-Name")
        page.click("input[name=_save]")
        expect(page.locator(".errorlist")).to_contain_text(NAME_RULE)
        assert not Site.objects.exists()

        page.fill("#id_name", name)
        page.click("input[name=_save]")
        expect(page).to_have_url(re.compile(r"/admin/sites/site/\d+/change/$"))
        expect(page.locator(".messagelist")).to_contain_text("is being built")

        # The page follows the job by itself; nobody presses reload.
        status = page.locator(".field-status_badge .wpf-badge").first
        expect(status).to_have_text("Active", timeout=180_000)
        expect(page.locator("#wpfleet-live")).to_have_count(0)
        resources = page.locator("table.wpf-resources")
        expect(resources).to_be_visible()
        # database, account, volume, network, two containers, server block,
        # WordPress install, Caddy snippet, Caddy route: all present and ours.
        assert resources.locator("tr.wpf-health-ok").count() == 10, resources.inner_text()
        assert resources.locator("tbody tr").count() == 10, resources.inner_text()
        job = Job.objects.get(subject_name=name, type=Site.JobType.PROVISION)
        assert job.status == Job.Status.DONE
        expect(page.locator(".wpf-timeline").first).to_contain_text("live_check")
        screenshot(page, "admin-site-page.png")

        domain = f"{name}.{settings.WPFLEET_BASE_DOMAIN}"
        link = page.locator(".field-domain_link a")
        expect(link).to_have_attribute("href", f"http://{domain}/")
        answers: list[tuple[str, int, str]] = []
        context.on("response", lambda r: answers.append((r.url, r.status, r.headers.get("location", ""))))
        with context.expect_page() as opened:
            link.click()
        wordpress = opened.value
        wordpress.wait_for_load_state()
        # The link reached WordPress through Caddy (the host-resolver rule):
        # an installed site, showing its title (the name, by default), never
        # the installer that would make its first visitor the administrator.
        first = next(answer for answer in answers if answer[0] == f"http://{domain}/")
        assert first[1] == 200, answers
        expect(wordpress).to_have_title(re.compile(re.escape(name)))
        assert not any("install.php" in url for url, _, _ in answers), answers
        screenshot(wordpress, "wordpress-home-page.png")
        wordpress.close()

        page.goto(live_server.url + "/admin/sites/site/")
        row = page.locator("#result_list tbody tr", has_text=name)
        expect(row.locator(".wpf-badge").first).to_have_text("Active")
        screenshot(page, "admin-site-list.png")

        # Deleting is an action behind a confirmation page, never the stock delete.
        row.locator("input.action-select").check()
        page.select_option("select[name=action]", "deprovision_sites")
        page.click("button[name=index]")
        expect(page.locator("#content")).to_contain_text("Are you sure you want to delete 1 site?")
        screenshot(page, "admin-delete-confirmation.png")
        page.get_by_role("button", name="Yes, delete").click()
        expect(page.locator(".messagelist")).to_contain_text("1 site queued for deletion")

        # The list follows the deletion by itself until the site is gone (no reload here).
        expect(page.locator("#result_list tbody tr", has_text=name)).to_have_count(0, timeout=120_000)
        expect(page.locator("#wpfleet-live")).to_have_count(0)
        assert not Site.objects.filter(name=name).exists()
        assert leftovers(infra, name) == []
        assert Job.objects.get(subject_name=name, type=Site.JobType.DEPROVISION).status == Job.Status.DONE
    except Exception:
        screenshot(page, "admin-failure.png")
        raise
    finally:
        context.close()
        force_remove(infra, name)
