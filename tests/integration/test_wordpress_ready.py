"""On the real lab: an ACTIVE site is an installed WordPress, never an open installer."""

from __future__ import annotations

import pytest

from sites.models import Site
from sites.ops.reconcile import reconcile_all
from sites.services import create_site
from tests.conftest import unique_name
from tests.integration.conftest import fetch, force_remove, leftovers, run_to_end

pytestmark = [pytest.mark.integration]


@pytest.fixture
def site_titled(infra, transactional_db):
    made: list[str] = []

    def make(title: str, **wordpress: str) -> Site:
        name = unique_name("wp")
        made.append(name)
        site = create_site(name, title=title, **wordpress)
        run_to_end(site.current_job_id)
        site.refresh_from_db()
        return site

    yield make
    for name in made:
        force_remove(infra, name)


def wordpress_users(infra, site: Site) -> list[tuple[str, str, bool]]:
    with infra.db.cursor() as cur:
        cur.execute(f"SELECT user_login, user_email, user_pass <> '' FROM `{site.names.database}`.wp_users")
        return [(login, email, bool(has_password)) for login, email, has_password in cur.fetchall()]


def test_a_new_site_is_installed_with_its_title_and_admin_and_its_installer_offers_no_form(site_titled, infra):
    site = site_titled("Fleet Ready Blog", admin_email="owner@example.test")
    assert site.status == Site.Status.ACTIVE
    installer = fetch(site.name, "/wp-admin/install.php")
    assert installer.status_code == 200 and "Already Installed" in installer.text
    assert 'id="setup"' not in installer.text and "<form" not in installer.text
    home = fetch(site.name, "/")
    assert home.status_code == 200 and "Fleet Ready Blog" in home.text
    assert fetch(site.name, "/?rest_route=/").json()["name"] == "Fleet Ready Blog"
    # The admin has a random login (never "admin") and a password only WordPress knows.
    assert site.admin_user.startswith("wp-") and site.admin_user != "admin"
    assert wordpress_users(infra, site) == [(site.admin_user, "owner@example.test", True)]
    assert not any("password" in field.name and field.name != "db_password" for field in Site._meta.get_fields())


def test_a_chosen_admin_user_is_the_wordpress_administrator(site_titled, infra):
    site = site_titled("Chosen", admin_user="chief-editor")
    assert site.status == Site.Status.ACTIVE
    assert [login for login, _, _ in wordpress_users(infra, site)] == ["chief-editor"]


def test_reconcile_all_reinstalls_a_wordpress_whose_tables_were_lost(site_titled, infra):
    site = site_titled("Lost Tables")
    infra.db.clear_database(site.name, site.names.database)
    assert fetch(site.name, "/wp-admin/install.php").status_code in (200, 302, 500)
    repaired = reconcile_all()
    assert f"WordPress install {site.names.database} missing" in repaired[site.name]
    installer = fetch(site.name, "/wp-admin/install.php")
    assert "Already Installed" in installer.text and 'id="setup"' not in installer.text
    assert fetch(site.name, "/?rest_route=/").json()["name"] == "Lost Tables"


def test_deleting_an_installed_site_leaves_nothing(site_titled, infra):
    from sites.services import delete_site

    site = site_titled("Short Lived")
    job = delete_site(site)
    run_to_end(job.pk)
    assert leftovers(infra, site.name) == []
