"""The API's contract, checked without touching the Docker host (no worker runs here)."""

import pytest
from django_q.models import OrmQ

from jobs.models import Job
from sites.models import Site

pytestmark = pytest.mark.django_db(transaction=True)


def test_post_creates_the_site_and_its_job_and_answers_202(api):
    response = api.post("/api/sites", {"site": "mysite"})
    assert response.status_code == 202
    body = response.json()
    assert body["name"] == "mysite"
    assert body["status"] == "PROVISIONING"
    assert body["domain"] == "mysite.wpfleet.test" or body["domain"].startswith("mysite.")
    assert body["job"]["type"] == "PROVISION"
    assert body["job"]["status"] == "PENDING"
    assert body["job"]["attempts"] == 0
    assert body["job"]["max_attempts"] >= 1
    site = Site.objects.get(name="mysite")
    assert site.current_job_id == body["job"]["id"] == site.last_job_id
    # Enqueued after commit, for the worker.
    assert OrmQ.objects.count() == 1


def test_post_accepts_json_like_the_form(api):
    response = api.post("/api/sites", {"site": "jsonsite"}, format="json")
    assert response.status_code == 202


def test_invalid_name_is_400_naming_the_rule_and_writes_nothing(api):
    response = api.post("/api/sites", {"site": "My-Site"})
    assert response.status_code == 400
    assert "lowercase letters" in response.json()["detail"]
    assert not Site.objects.exists() and not Job.objects.exists() and not OrmQ.objects.exists()


def test_reserved_name_is_400(api):
    response = api.post("/api/sites", {"site": "caddy"})
    assert response.status_code == 400
    assert response.json()["code"] == "reserved"


def test_missing_field_is_400(api):
    response = api.post("/api/sites", {"name": "x"})
    assert response.status_code == 400
    assert "'site'" in response.json()["detail"]


def test_taken_name_is_409_and_writes_nothing(api):
    assert api.post("/api/sites", {"site": "taken"}).status_code == 202
    response = api.post("/api/sites", {"site": "taken"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]
    assert Site.objects.count() == 1 and Job.objects.count() == 1


def test_anonymous_requests_get_401_and_write_nothing(anonymous):
    assert anonymous.get("/api/sites").status_code == 401
    assert anonymous.post("/api/sites", {"site": "anon"}).status_code == 401
    assert not Site.objects.exists()


def test_get_lists_sites_with_their_latest_job(api):
    api.post("/api/sites", {"site": "one"})
    api.post("/api/sites", {"site": "two"})
    body = api.get("/api/sites").json()
    assert body["count"] == 2
    assert [site["name"] for site in body["results"]] == ["one", "two"]
    assert all(site["job"]["type"] == "PROVISION" for site in body["results"])
    detail = api.get("/api/sites/one").json()
    assert detail["job"]["status"] == "PENDING"
    assert api.get("/api/sites/nothere").status_code == 404


def test_job_detail_shows_steps(api):
    job_id = api.post("/api/sites", {"site": "steps"}).json()["job"]["id"]
    body = api.get(f"/api/jobs/{job_id}").json()
    assert body["site"] == "steps" and body["steps"] == []


def test_delete_while_a_job_is_open_is_409(api):
    api.post("/api/sites", {"site": "busy"})
    response = api.delete("/api/sites/busy")
    assert response.status_code == 409
    assert Job.objects.filter(type=Site.JobType.DEPROVISION).count() == 0


def test_delete_of_an_idle_site_is_202_with_a_deprovision_job(api):
    api.post("/api/sites", {"site": "idle"})
    Site.objects.filter(name="idle").update(current_job=None, status=Site.Status.ACTIVE)
    response = api.delete("/api/sites/idle")
    assert response.status_code == 202
    assert response.json()["status"] == "DEPROVISIONING"
    assert response.json()["job"]["type"] == "DEPROVISION"


def test_secrets_are_not_in_api_responses(api):
    api.post("/api/sites", {"site": "secret"})
    password = Site.objects.get(name="secret").db_password
    for path in ["/api/sites", "/api/sites/secret", f"/api/jobs/{Job.objects.get().pk}"]:
        assert password not in api.get(path).content.decode()


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/sites" in schema.content
    assert api.get("/api/docs/").status_code == 200


def test_the_site_list_is_paginated(api):
    for name in ["p1", "p2", "p3"]:
        api.post("/api/sites", {"site": name})
    page = api.get("/api/sites?page_size=2").json()
    assert page["count"] == 3 and [s["name"] for s in page["results"]] == ["p1", "p2"] and page["next"]
    assert [s["name"] for s in api.get("/api/sites?page_size=2&page=2").json()["results"]] == ["p3"]


# --- inside WordPress: a new admin password, a login link (the lab tests run them for real) ---


@pytest.mark.parametrize("path", ["admin-password", "login-link"])
def test_wordpress_operations_on_a_site_being_built_are_409_and_change_nothing(api, path):
    api.post("/api/sites", {"site": "building"})
    before = list(Site.objects.values())
    response = api.post(f"/api/sites/building/{path}")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "site building is provisioning: only an active site has a WordPress to log in to",
        "code": "not_active",
    }
    assert list(Site.objects.values()) == before


@pytest.mark.parametrize("path", ["admin-password", "login-link"])
def test_wordpress_operations_on_no_such_site_are_404_and_other_methods_405(api, path):
    assert api.post(f"/api/sites/nosuchsite/{path}").status_code == 404
    api.post("/api/sites", {"site": "there"})
    assert api.get(f"/api/sites/there/{path}").status_code == 405


@pytest.mark.parametrize("path", ["admin-password", "login-link"])
def test_wordpress_operations_need_the_change_permission(api, path):
    from tests.conftest import token_client, user_in_group

    api.post("/api/sites", {"site": "guarded"})
    viewer = token_client(user_in_group("viewer", "Site viewers"))
    response = viewer.post(f"/api/sites/guarded/{path}")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
