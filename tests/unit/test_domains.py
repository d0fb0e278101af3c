"""A site's own domains: what is accepted, how it is stored, and what the API refuses (no lab needed)."""

import pytest
from django.core.exceptions import ValidationError
from django_q.models import OrmQ

from jobs.models import Job
from sites.models import Domain, Site
from sites.models.validation import validate_domain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "given,stored",
    [
        ("Shop.Example.COM", "shop.example.com"),
        ("shop.example.com.", "shop.example.com"),
        ("  www.example.org ", "www.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c-d.example", "a-b.c-d.example"),
    ],
)
def test_a_domain_is_stored_lowercase_in_its_ascii_form(given, stored):
    assert validate_domain(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "localhost",  # one label
        "192.168.1.10",  # an IP address
        "[::1]",
        "-shop.example.com",
        "shop-.example.com",
        "shop_1.example.com",
        "shop..example.com",
        "shop example.com",
        "https://shop.example.com",
        "shop.example.com/path",
        "shop.example.com:443",
        "a" * 64 + ".example.com",  # a label longer than 63
        ".".join(["a" * 60] * 5),  # longer than 253
        "",
        None,
        42,
        "*.example.com",
    ],
)
def test_what_is_not_a_hostname_is_refused(given):
    with pytest.raises(ValidationError):
        validate_domain(given)


def test_a_name_under_the_panels_base_domain_is_refused_unless_it_is_the_sites_own(settings):
    settings.WPFLEET_BASE_DOMAIN = "wpfleet.test"
    with pytest.raises(ValidationError, match="this panel's own site names"):
        validate_domain("other.wpfleet.test", own_hostname="mine.wpfleet.test")
    with pytest.raises(ValidationError):
        validate_domain("wpfleet.test")
    assert validate_domain("mine.wpfleet.test", own_hostname="mine.wpfleet.test") == "mine.wpfleet.test"


def active(name: str) -> Site:
    return Site.objects.create(name=name, domain=f"{name}.wpfleet.test", status=Site.Status.ACTIVE)


def test_adding_a_domain_answers_202_with_a_job_and_lists_it_as_adding(api):
    active("shop")
    response = api.post("/api/sites/shop/domains", {"domain": "Shop.Example.com"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["domains"] == [
        {"domain": "shop.wpfleet.test", "primary": True, "state": "ACTIVE"},
        {"domain": "shop.example.com", "primary": False, "state": "ADDING"},
    ]
    assert body["job"]["type"] == "DOMAINS" and body["job"]["status"] == "PENDING"
    assert OrmQ.objects.count() == 1


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"domain": "192.0.2.1"}, 400, "invalid"),
        ({"domain": "other.wpfleet.test"}, 400, "reserved"),
        ({"domain": "shop.example.com", "primary": True}, 400, "unknown_field"),
        ({}, 400, "required"),
        ({"domain": "taken.example.com"}, 409, "taken"),
        ({"domain": "TAKEN.example.com."}, 409, "taken"),
        ({"domain": "mine.wpfleet.test"}, 409, "taken"),
    ],
)
def test_a_bad_or_duplicate_domain_is_refused_and_writes_nothing(api, settings, body, status, code):
    settings.WPFLEET_BASE_DOMAIN = "wpfleet.test"
    other = active("other")
    Domain.objects.create(site=other, name="taken.example.com", state=Domain.State.ACTIVE)
    active("mine")
    before = (list(Domain.objects.values()), Job.objects.count())
    response = api.post("/api/sites/mine/domains", body, format="json")
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    assert (list(Domain.objects.values()), Job.objects.count()) == before


def test_domains_of_a_site_that_is_not_active_or_busy_are_409(api):
    api.post("/api/sites", {"site": "building"})
    response = api.post("/api/sites/building/domains", {"domain": "b.example.com"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "not_active"
    site = active("busy")
    api.post("/api/sites/busy/domains", {"domain": "one.example.com"}, format="json")
    response = api.post("/api/sites/busy/domains", {"domain": "two.example.com"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "busy"
    assert list(site.domains.values_list("name", flat=True)) == ["one.example.com"]


def test_removing_or_making_primary_a_domain_the_site_does_not_have_is_404(api):
    active("mine")
    assert api.delete("/api/sites/mine/domains/nope.example.com").status_code == 404
    assert api.patch("/api/sites/mine/domains/nope.example.com", {"primary": True}, format="json").status_code == 404
    assert api.delete("/api/sites/nosuchsite/domains/a.example.com").status_code == 404
    assert not Job.objects.exists()


def test_primary_accepts_only_true(api):
    site = active("mine")
    Domain.objects.create(site=site, name="a.example.com", state=Domain.State.ACTIVE)
    response = api.patch("/api/sites/mine/domains/a.example.com", {"primary": False}, format="json")
    assert response.status_code == 400
    response = api.patch("/api/sites/mine/domains/a.example.com", {"primary": True}, format="json")
    assert response.status_code == 202
    assert [d for d in response.json()["domains"] if d["primary"]] == [
        {"domain": "a.example.com", "primary": True, "state": "ACTIVE"}
    ]


def test_a_viewer_cannot_change_domains(api):
    from tests.conftest import token_client, user_in_group

    active("mine")
    viewer = token_client(user_in_group("viewer", "Site viewers"))
    assert viewer.post("/api/sites/mine/domains", {"domain": "a.example.com"}, format="json").status_code == 403
    assert not Domain.objects.exists()
