"""An operator's round trip in a real browser: add a site in the admin, watch it
go live without reloading, visit the installed WordPress through Caddy, delete it again.

Headless Chromium (Debian's package) driven by Playwright, against the live
test server, a real worker cluster and the real lab.

The sites are served over HTTPS only, with certificates of the lab's own CA
(settings.WPFLEET_CA_BUNDLE, var/lab-ca.crt). The browser trusts that CA the
way Chromium on Linux trusts any local root: it is imported into the NSS
database of the browser's $HOME (~/.pki/nssdb), a throwaway HOME of this
test's. Certificate errors are never ignored: a site whose certificate the
browser does not trust fails the test.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from jobs.models import Job
from sites.models import Site
from sites.models.validation import NAME_RULE
from tests.conftest import unique_name
from tests.integration.conftest import SHARED_COMPILED_CORE, force_remove, leftovers

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(600)]

ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CA_NICKNAME = "wpfleet-lab"
VIEWPORT = {"width": 1440, "height": 1000}
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
Answer = tuple[str, int, str]  # url, status, Location
Failure = tuple[str, str | None]  # url, why


def caddy_address() -> str:
    """host:port of the lab's Caddy HTTPS listener (settings.WPFLEET_CADDY_URL)."""
    url = urlsplit(settings.WPFLEET_CADDY_URL)
    host = url.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{url.port or 443}"


def chromium_args() -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        # TCP only: the published HTTPS port is TCP, no HTTP/3 attempts.
        "--disable-quic",
        # Every site's hostname reaches the lab's Caddy on its HTTPS port:
        # DNS for the base domain without touching the machine's resolver.
        # The name (SNI, Host) stays the site's, so its certificate is checked.
        f"--host-resolver-rules=MAP *.{settings.WPFLEET_BASE_DOMAIN} {caddy_address()}",
    ]


def certutil(*args: str) -> str:
    done = subprocess.run(["certutil", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"certutil {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


@pytest.fixture(scope="session")
def browser_home(tmp_path_factory) -> Path:
    """A HOME for Chromium whose NSS database trusts the lab's CA for TLS servers, and nothing else of ours."""
    ca = settings.WPFLEET_CA_BUNDLE
    if not ca or not Path(ca).is_file():
        pytest.fail(f"WPFLEET_CA_BUNDLE={ca!r} is not the lab's CA certificate: lab/up.sh writes var/lab-ca.crt")
    if shutil.which("certutil") is None:
        pytest.fail("certutil is missing: the lab needs Debian's libnss3-tools package")
    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    database = f"sql:{nssdb}"
    certutil("-N", "-d", database, "--empty-password")
    # "C,,": a trusted CA for TLS server certificates (not for mail nor code signing).
    certutil("-A", "-d", database, "-n", CA_NICKNAME, "-t", "C,,", "-i", ca)
    listed = certutil("-L", "-d", database)
    assert re.search(rf"^{CA_NICKNAME}\s+C,,\s*$", listed, re.MULTILINE), listed
    return home


@pytest.fixture
def browser(monkeypatch, browser_home) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: lab/up.sh installs Debian's chromium package")
    # Sync Playwright keeps an event loop running in this thread, which
    # Django's guard takes for async code; the ORM calls made between browser
    # steps are plain blocking calls, one at a time, so the guard is lifted
    # for this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=chromium_args(),
            headless=True,
            # Chromium on Linux reads its trusted local roots from $HOME/.pki/nssdb.
            env={**os.environ, "HOME": str(browser_home)},
        )
        yield browser
        browser.close()


def watch(context: BrowserContext) -> tuple[list[Answer], list[Failure]]:
    """What the requests of the context's pages get from now on: (url, status, Location),
    and which fail, and how."""
    answers: list[Answer] = []
    failures: list[Failure] = []
    context.on("response", lambda r: answers.append((r.url, r.status, r.headers.get("location", ""))))
    context.on("requestfailed", lambda r: failures.append((r.url, r.failure)))
    return answers, failures


def interrupted(failures: list[Failure], host: str | None) -> bool:
    """Whether a request to the host was aborted by a network change on this host (see visit)."""
    return any(urlsplit(of).hostname == host and how == NETWORK_CHANGED for of, how in failures)


def visit_afresh(browser: Browser, url: str, viewport) -> tuple[Page, list[Answer], list[Failure]]:
    """Go to the URL in a fresh context of the browser (closed with it), whose
    requests are only this visit's: the page, what they got and which failed.
    Visited again a moment later, in another fresh context, while a network
    change interrupts the visit (see visit)."""
    host = urlsplit(url).hostname
    for attempt in range(4):
        fresh = browser.new_context(viewport=viewport)
        answers, failures = watch(fresh)
        page = fresh.new_page()
        try:
            page.goto(url, wait_until="networkidle")
        except PlaywrightError as exc:
            if NETWORK_CHANGED not in exc.message:
                raise
        if not interrupted(failures, host):
            break
        time.sleep(2**attempt)  # out of the burst: a container's interfaces settle within seconds
    return page, answers, failures


def visit(context: BrowserContext, link: Locator, url: str) -> tuple[Page, list[Answer], list[Failure]]:
    """Open the link (a new tab) and let the page load: the page, and what the
    context's requests got and which failed, how.

    A network interface coming or going on this host (a container started or
    removed: the site's own, shortly before, or other tests') makes Chromium
    abort its requests in flight with ERR_NETWORK_CHANGED, up to seconds
    later: such a visit proves nothing either way,
    so the URL is visited again a moment later, in a fresh context of the
    same browser (closed with it) whose requests are only this visit's. Any
    other failure is the answer.
    """
    answers, failures = watch(context)
    with context.expect_page() as opened:
        link.click()
    page = opened.value
    page.wait_for_load_state("networkidle")
    if interrupted(failures, urlsplit(url).hostname):
        time.sleep(1)
        return visit_afresh(context.browser, url, page.viewport_size)
    return page, answers, failures


def log_in(context: BrowserContext, button: Locator, host: str) -> tuple[Page, list[Answer], list[Failure]]:
    """Press the button that opens the site's WordPress, logged in, in a new tab
    (through a one-time link) and let the page load: the page, what the
    context's requests got from the press on and which failed, how.

    A visit interrupted by a network change (see visit) may have spent its
    link, or not: the button is pressed again a moment later, for a new link.
    """
    for attempt in range(4):
        answers, failures = watch(context)
        with context.expect_page() as opened:
            button.click()
        page = opened.value
        page.wait_for_load_state("networkidle")
        if not interrupted(failures, host):
            break
        page.close()
        time.sleep(2**attempt)
    return page, answers, failures


def stylesheets(page: Page) -> list[dict]:
    """The stylesheets the page links: their URL and how many rules they have (-1: none loaded, or unreadable)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('link[rel="stylesheet"]')].map(link => {
            let rules = -1;
            try { rules = link.sheet ? link.sheet.cssRules.length : -1; } catch (e) {}
            return { href: link.href, rules };
        })"""
    )


def rgb(color: str) -> tuple[int, ...]:
    """The channels of a computed CSS color, rgb(...) or rgba(...)."""
    return tuple(round(float(channel)) for channel in re.findall(r"[\d.]+", color))


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
    name = unique_name("br")
    context = browser.new_context(viewport=VIEWPORT)
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
        # database, account, volume, page cache volume, two containers, server
        # block, WordPress install, Caddy route, and on a host with quotas the
        # quota directory (and PHP's /tmp volume over the shared compiled
        # WordPress): all present and ours.
        expected = 9 + bool(settings.WPFLEET_QUOTA_ROOT) + SHARED_COMPILED_CORE
        assert resources.locator("tr.wpf-health-ok").count() == expected, resources.inner_text()
        assert resources.locator("tbody tr").count() == expected, resources.inner_text()
        job = Job.objects.get(subject_name=name, type=Site.JobType.PROVISION)
        assert job.status == Job.Status.DONE
        expect(page.locator(".wpf-timeline").first).to_contain_text("live_check")
        screenshot(page, "admin-site-page.png")

        domain = f"{name}.{settings.WPFLEET_BASE_DOMAIN}"
        home = f"https://{domain}/"
        link = page.locator(".field-domain_link a")
        expect(link).to_have_attribute("href", home)
        wordpress, answers, failures = visit(context, link, home)
        # The link reached WordPress through Caddy (the host-resolver rule),
        # over HTTPS with a certificate the browser trusts (the lab's CA; an
        # untrusted one is a failed request, not an answer): an installed
        # site, showing its title (the name, by default), never the installer
        # that would make its first visitor the administrator.
        assert [failure for failure in failures if urlsplit(failure[0]).hostname == domain] == [], failures
        first = next((answer for answer in answers if answer[0] == home), None)
        assert first is not None and first[1] == 200, answers
        assert wordpress.url == home
        expect(wordpress).to_have_title(re.compile(re.escape(name)))
        assert not any("install.php" in url for url, _, _ in answers), answers
        # Everything the page asked of the site went over https and was served:
        # no http:// URL (mixed content, which the browser would block).
        of_site = [answer for answer in answers if urlsplit(answer[0]).hostname == domain]
        assert all(url.startswith(f"https://{domain}/") for url, _, _ in of_site), of_site
        assert all(status < 400 for _, status, _ in of_site), of_site
        # And it is styled: every stylesheet it links is one of the site's,
        # over https, loaded (its rules readable), and the body's computed
        # font is the theme's, not the browser's default.
        sheets = stylesheets(wordpress)
        assert sheets, "the home page links no stylesheet"
        assert all(sheet["href"].startswith(f"https://{domain}/") and sheet["rules"] > 0 for sheet in sheets), sheets
        font = "() => getComputedStyle(document.body).fontFamily"
        themed = wordpress.evaluate(font)
        plain = context.new_page()
        plain.set_content("<!doctype html><html><body>plain</body></html>")
        default = plain.evaluate(font)
        plain.close()
        assert themed != default, f"body font {themed!r} is the browser's default: the theme's styles did not apply"
        screenshot(wordpress, "wordpress-home-page.png")
        wordpress.close()

        # One click on the site's page opens its WordPress dashboard, logged in
        # as the site's admin, in a new tab: the panel answers the button's POST
        # with a one-time link to the site, which the site's must-use plugin
        # spends on a WordPress session before sending the tab on to wp-admin.
        button = page.get_by_role("button", name="Log in to WordPress")
        expect(button).to_be_visible()
        pressed = time.monotonic()
        dashboard, answers, failures = log_in(context, button, domain)
        admin_home = f"https://{domain}/wp-admin/"
        expect(dashboard).to_have_url(admin_home)
        one_time = [url for url, _, _ in answers if "wpfleet_login=" in url]
        assert len(one_time) == 1 and one_time[0].startswith(f"https://{domain}/wp-login.php?wpfleet_login="), answers
        once = one_time[0]
        # The panel's answer is the redirect to that link, and the link's the
        # redirect to the dashboard: the tab never saw the login form.
        assert any(location == once for url, status, location in answers if status == 302), answers
        spent = next(answer for answer in answers if answer[0] == once)
        assert spent[1] == 302 and spent[2] == admin_home, spent
        assert not any(urlsplit(url).path == "/wp-login.php" and status == 200 for url, status, _ in answers), answers
        expect(dashboard.locator("#wpadminbar")).to_be_visible()
        expect(dashboard.locator("#adminmenu")).to_be_visible()
        expect(dashboard.locator("#wpbody-content .wrap h1")).to_have_text("Dashboard")
        expect(dashboard.locator("#loginform")).to_have_count(0)
        # The same rules as for the home page: nothing of the site's failed,
        # everything went over https and was served.
        assert [failure for failure in failures if urlsplit(failure[0]).hostname == domain] == [], failures
        of_site = [answer for answer in answers if urlsplit(answer[0]).hostname == domain]
        assert all(url.startswith(f"https://{domain}/") for url, _, _ in of_site), of_site
        assert all(status < 400 for _, status, _ in of_site), of_site
        # And wp-admin's own styles applied: its stylesheets are the site's and
        # loaded, and the admin bar and menu are WordPress's dark ones, not the
        # transparent background the same elements have without them.
        sheets = stylesheets(dashboard)
        assert sheets, "the dashboard links no stylesheet"
        assert all(sheet["href"].startswith(f"https://{domain}/") and sheet["rules"] > 0 for sheet in sheets), sheets
        backgrounds = """() => ['#wpadminbar', '#adminmenu'].map(
            selector => getComputedStyle(document.querySelector(selector)).backgroundColor)"""
        styled = dashboard.evaluate(backgrounds)
        plain = context.new_page()
        plain.set_content(
            '<!doctype html><html><body><div id="wpadminbar"></div><ul id="adminmenu"></ul></body></html>'
        )
        unstyled = plain.evaluate(backgrounds)
        plain.close()
        for element, color, default in zip(["#wpadminbar", "#adminmenu"], styled, unstyled, strict=True):
            assert color != default, (
                f"{element} has the browser's default background {color!r}: wp-admin's styles did not apply"
            )
            channels = rgb(color)
            opaque = len(channels) == 3 or channels[3] == 1
            assert opaque and max(channels[:3]) < 80, f"{element} background {color!r} is not WordPress's dark one"
        screenshot(dashboard, "wordpress-dashboard.png")
        dashboard.close()

        # The link works once: the same URL again, in a browser that holds no
        # session of the site, lands on WordPress's login form. Still well
        # within the link's lifetime, so it is the single use that refused it.
        again, answers, failures = visit_afresh(browser, once, VIEWPORT)
        assert [failure for failure in failures if urlsplit(failure[0]).hostname == domain] == [], failures
        assert urlsplit(again.url).hostname == domain and urlsplit(again.url).path == "/wp-login.php", again.url
        assert "wpfleet_login" not in again.url, again.url
        expect(again.locator("#loginform")).to_be_visible()
        expect(again.locator("#wpadminbar")).to_have_count(0)
        refused = next((answer for answer in answers if answer[0] == once), None)
        assert refused is not None and refused[1] == 302, answers
        assert urlsplit(refused[2]).path == "/wp-login.php", refused
        # (The login form's own styles are under /wp-admin/css/: the dashboard was never asked for.)
        assert not any(urlsplit(url).path in ("/wp-admin/", "/wp-admin/index.php") for url, _, _ in answers), answers
        assert time.monotonic() - pressed < settings.WPFLEET_LOGIN_LINK_SECONDS
        again.context.close()

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
