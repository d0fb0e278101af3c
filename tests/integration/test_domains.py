"""On the real lab: a customer's own domain, served over HTTPS by Caddy with its own certificate."""

from __future__ import annotations

import pytest

from jobs.models import Job
from sites.infra.errors import InfraError
from sites.models import Domain, Site
from tests.conftest import unique_name
from tests.integration.conftest import run_to_end
from tests.integration.test_provisioning import Prober
from tests.integration.test_wordpress_access import follow_link, logged_in

pytestmark = [pytest.mark.integration]


def change(api, method: str, path: str, body: dict | None = None) -> Job:
    response = getattr(api, method)(path, body, format="json") if body is not None else getattr(api, method)(path)
    assert response.status_code == 202, response.content
    job = run_to_end(response.json()["job"]["id"])
    assert job.status == Job.Status.DONE, job.error
    return job


def answer(infra, host: str, path: str = "/", timeout: float = 5):
    return infra.caddy.get(host, path, timeout=timeout)


def routed(infra, host: str) -> bool:
    """Whether Caddy serves the host: plain HTTP redirects it (an unrouted host gets 404)."""
    return infra.caddy.get_plain_http(host, "/").status_code == 308


@pytest.fixture
def site(make_site) -> Site:
    made = make_site()
    assert made.status == Site.Status.ACTIVE, made.last_job.error
    return made


def test_a_domain_is_added_served_over_https_made_primary_and_removed(site, api, infra):
    domain = f"{unique_name('shop')}.customer.test"
    own = site.domain
    with Prober(site.name) as prober:
        change(api, "post", f"/api/sites/{site.name}/domains", {"domain": domain.upper()})
        # Its own certificate (checked against the lab CA, for that name), serving the site.
        extra = answer(infra, domain)
        assert extra.status_code == 200 and site.title in extra.text
        assert routed(infra, domain)
        listed = api.get(f"/api/sites/{site.name}").json()["domains"]
        assert listed == [
            {"domain": own, "primary": True, "state": "ACTIVE"},
            {"domain": domain, "primary": False, "state": "ACTIVE"},
        ]

        # Primary: WordPress's home and siteurl follow it; the site's own name now redirects there.
        change(api, "patch", f"/api/sites/{site.name}/domains/{domain}", {"primary": True})
        home = answer(infra, domain)
        assert home.status_code == 200 and site.title in home.text
        assert infra.db.wordpress_siteurl(site.names.database) == f"https://{domain}"
        assert f"https://{domain}/" in answer(infra, own).text  # its links name the primary domain
        assert api.get(f"/api/sites/{site.name}").json()["domains"][1]["primary"] is True
        assert Site.objects.get(pk=site.pk).url == f"https://{domain}/"
        # One-click login lands on the primary domain, where WordPress's cookie is set.
        link = api.post(f"/api/sites/{site.name}/login-link").json()["url"]
        assert link.startswith(f"https://{domain}/wp-login.php?")
        assert logged_in(follow_link(infra, link))

        # Removed: it no longer routes, and the site's own name is home again.
        change(api, "delete", f"/api/sites/{site.name}/domains/{domain}")
        assert not routed(infra, domain)
        assert answer(infra, own).status_code == 200
        assert infra.db.wordpress_siteurl(site.names.database) == f"https://{own}"
        assert not Domain.objects.filter(name=domain).exists()
    # The site's own hostname answered throughout (a bystander's view of the same site).
    assert prober.requests > 0 and prober.failures == []


def test_a_domain_of_another_site_is_409(site, make_site, api):
    domain = f"{unique_name('dup')}.customer.test"
    change(api, "post", f"/api/sites/{site.name}/domains", {"domain": domain})
    other = make_site()
    response = api.post(f"/api/sites/{other.name}/domains", {"domain": domain}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "taken"
    assert list(other.domains.all()) == []


def test_a_domain_job_that_fails_goes_back_to_the_previous_domains_and_the_site_keeps_serving(
    site, api, infra, settings
):
    kept = f"{unique_name('kept')}.customer.test"
    change(api, "post", f"/api/sites/{site.name}/domains", {"domain": kept})
    new = f"{unique_name('new')}.customer.test"
    settings.WPFLEET_FAULTS = ("live_check",)
    with Prober(site.name) as prober:
        response = api.post(f"/api/sites/{site.name}/domains", {"domain": new}, format="json")
        Job.objects.filter(pk=response.json()["job"]["id"]).update(max_attempts=1)
        job = run_to_end(response.json()["job"]["id"])
    assert job.status == Job.Status.FAILED and "injected fault after live_check" in job.error
    # Back to before: the new domain is neither routed nor listed, the kept one serves.
    assert [str(d) for d in Site.objects.get(pk=site.pk).domains.all()] == [kept]
    assert not routed(infra, new)
    assert routed(infra, kept) and answer(infra, kept).status_code == 200
    with pytest.raises(InfraError):
        answer(infra, f"{unique_name('never')}.customer.test")  # no route, no certificate
    assert prober.requests > 0 and prober.failures == []
    assert Site.objects.get(pk=site.pk).current_job_id is None  # free for the next change


def aliases(infra, site: Site) -> set[str]:
    nginx = infra.docker.container(site.names.nginx)
    backend = Site.objects.get(pk=site.pk).backend_network
    found = nginx.attrs["NetworkSettings"]["Networks"][backend]["Aliases"] or []
    return {alias for alias in found if alias.endswith(".wpfleet.invalid")}


@pytest.mark.parametrize("failing", ["make primary", "remove"])
def test_a_failing_change_of_the_primary_or_a_removal_leaves_everything_as_it_was(site, api, infra, settings, failing):
    kept = f"{unique_name('kept')}.customer.test"
    change(api, "post", f"/api/sites/{site.name}/domains", {"domain": kept})
    before = (aliases(infra, site), infra.db.wordpress_siteurl(site.names.database))
    assert before == ({f"{site.domain}.wpfleet.invalid", f"{kept}.wpfleet.invalid"}, f"https://{site.domain}")
    settings.WPFLEET_FAULTS = ("live_check",)
    if failing == "make primary":
        response = api.patch(f"/api/sites/{site.name}/domains/{kept}", {"primary": True}, format="json")
    else:
        response = api.delete(f"/api/sites/{site.name}/domains/{kept}")
    Job.objects.filter(pk=response.json()["job"]["id"]).update(max_attempts=1)
    job = run_to_end(response.json()["job"]["id"])
    assert job.status == Job.Status.FAILED
    assert (aliases(infra, site), infra.db.wordpress_siteurl(site.names.database)) == before
    assert list(Site.objects.get(pk=site.pk).domains.values_list("name", "state", "primary")) == [
        (kept, "ACTIVE", False)
    ]
    assert routed(infra, kept) and answer(infra, kept).status_code == 200


def test_a_reconcile_pass_gives_back_a_lost_alias_and_takes_away_a_stale_one(site, infra):
    from sites.ops.reconcile import reconcile_all

    network = infra.docker.client.networks.get(Site.objects.get(pk=site.pk).backend_network)
    nginx = infra.docker.container(site.names.nginx)
    stale = f"{unique_name('stale')}.customer.test.wpfleet.invalid"
    network.disconnect(nginx)
    network.connect(nginx, aliases=[stale])  # its own hostname lost, another's kept
    assert aliases(infra, site) == {stale}
    drift = reconcile_all(infra)[site.name]
    assert f"nginx container {site.names.nginx} not reachable as {site.domain} from Caddy" in drift
    assert aliases(infra, site) == {f"{site.domain}.wpfleet.invalid"}
    assert answer(infra, site.domain).status_code == 200


def test_a_blog_renamed_inside_wordpress_still_gets_its_domain_and_the_panel_follows_the_new_title(site, api, infra):
    code, output = infra.docker.exec(
        site.names.php,
        [
            "php",
            "-r",
            "$_SERVER['HTTP_HOST'] = getenv('H'); require '/var/www/html/wp-load.php';"
            " update_option('blogname', 'Renamed by its owner');",
        ],
        user="www-data",
        environment={"H": site.domain},
    )
    assert code == 0, output
    domain = f"{unique_name('r')}.example.org"
    job = change(api, "post", f"/api/sites/{site.name}/domains", {"domain": domain})
    assert job.status == Job.Status.DONE, job.error
    site.refresh_from_db()
    assert site.title == "Renamed by its owner"
    assert answer(infra, domain, "/?rest_route=/").json()["name"] == "Renamed by its owner"
