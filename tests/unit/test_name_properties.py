"""Properties of site names, for any input: what the validator accepts is safe everywhere a name goes.

The validator is the only gate between a client's string and MariaDB
identifiers, Docker names and the Caddyfile. These tests check its answers
against an oracle written independently of its regular expression, and check
every identifier derived from an accepted name against the rules of the
system that will receive it.
"""

from __future__ import annotations

import json
import re
import string

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django_q.models import OrmQ
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from jobs.models import Job
from sites.infra.caddy import owner_marker, route_content
from sites.infra.mariadb import grant_pattern, quote_ident
from sites.models import Site
from sites.models.naming import SiteNames
from sites.models.validation import validate_site_name
from tests.conftest import user_in_group

ALPHABET = string.ascii_lowercase + string.digits


def is_site_name(value: object) -> bool:
    """The rule, stated without a regular expression: 1 to 32 of a-z and 0-9."""
    return isinstance(value, str) and 1 <= len(value) <= 32 and all(char in ALPHABET for char in value)


# Arbitrary text rarely lands on a good name by chance; mix in text built from
# good characters plus their neighbours and look-alikes, so that both
# outcomes, and the boundary between them, are exercised.
NEAR_MISS_CHARACTERS = ALPHABET + "AZ_-. \t\n\r\x00%'`$/\\{}éаοｍ\u0301\u200b\u212a"
any_text = st.one_of(
    st.text(),
    st.text(alphabet=NEAR_MISS_CHARACTERS, max_size=40),
    st.text(alphabet=ALPHABET, min_size=0, max_size=40),
    st.from_regex(r"[a-z0-9]{1,32}", fullmatch=True),
)
good_names = st.text(alphabet=ALPHABET, min_size=1, max_size=32).filter(
    lambda name: name not in settings.WPFLEET_RESERVED_NAMES
)

DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


# --- the validator ---------------------------------------------------------------


@hypothesis_settings(max_examples=1000)
@given(any_text)
def test_the_validator_refuses_or_returns_the_same_string(value):
    try:
        result = validate_site_name(value)
    except ValidationError:
        return
    assert result == value and type(result) is str


@hypothesis_settings(max_examples=1000)
@given(any_text)
def test_the_validator_accepts_exactly_the_rule_minus_reserved_names(value):
    try:
        validate_site_name(value)
        accepted = True
    except ValidationError:
        accepted = False
    event("accepted" if accepted else "refused")
    assert accepted == (is_site_name(value) and value not in settings.WPFLEET_RESERVED_NAMES)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(), st.lists(st.text())))
def test_anything_that_is_not_a_string_is_refused(value):
    with pytest.raises(ValidationError):
        validate_site_name(value)


# --- identifiers derived from an accepted name -------------------------------------


@given(good_names)
def test_mariadb_names_of_an_accepted_name_are_legal_and_grants_match_one_database(name):
    names = SiteNames(validate_site_name(name))
    for identifier in (names.database, names.db_user):
        assert len(identifier) <= 64 and re.fullmatch(r"[a-z0-9_]+", identifier)
        assert quote_ident(identifier) == f"`{identifier}`"
    pattern = grant_pattern(names.database)
    inner = pattern[1:-1]
    assert pattern == f"`{inner}`"
    # In GRANT ... ON `db`.*, an unescaped _ matches any character: wp_a
    # would also grant wpXa. Every _ must carry its backslash.
    assert re.search(r"(?<!\\)_", inner) is None
    assert inner.replace("\\_", "_") == names.database


@given(good_names)
def test_docker_names_of_an_accepted_name_are_legal(name):
    names = SiteNames(validate_site_name(name))
    for docker_name in (names.php, names.nginx, names.volume, names.legacy_network):
        assert DOCKER_NAME.fullmatch(docker_name), docker_name
        # Containers are reached by name through Docker's DNS (reverse_proxy
        # nginx_<site>:80), so they must also fit in one DNS label.
        assert len(docker_name) <= 63


@given(good_names)
def test_the_caddy_route_of_an_accepted_name_is_one_file_of_one_line(name):
    names = SiteNames(validate_site_name(name))
    domain = names.domain
    labels = domain.split(".")
    # The hostname is also nginx's network alias, resolved by Docker's DNS.
    assert len(domain) <= 253 and all(DNS_LABEL.fullmatch(label) for label in labels), domain
    # One file right in the routes directory: a name with a slash or a dot
    # segment would write elsewhere, or route another host.
    directory, filename = names.route.rsplit("/", 1)
    assert directory == settings.WPFLEET_CADDY_ROUTES_DIR.rstrip("/") and filename == domain
    assert route_content(name) == f"{owner_marker()} site={name}\n"


# --- the API, for any JSON body ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"site": json_values}),
    st.fixed_dictionaries({"site": any_text}),
    st.dictionaries(st.sampled_from(["site", "name", "status", "domain"]), json_values | any_text, max_size=3),
)


@pytest.fixture
def staff_user(db):
    # No password: hashing one costs a quarter of a second and the API is
    # reached by token only.
    return user_in_group("operator", "Site operators")


@pytest.fixture
def fresh_throttle_counts():
    # The throttle counts requests per user in the cache, which outlives the
    # test database: start from zero so that hundreds of examples here do not
    # inherit other tests' counts.
    cache.clear()


@pytest.mark.django_db(transaction=True)
@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_bodies)
def test_the_api_never_answers_5xx_to_any_json_body_and_only_good_names_make_rows(api, fresh_throttle_counts, body):
    response = api.post("/api/sites", json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (body, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    event(f"status {response.status_code}")
    if response.status_code == 202:
        assert isinstance(body, dict) and set(body) == {"site"} and is_site_name(body["site"])
    else:
        assert isinstance(response.json().get("detail"), str)
    # Whatever was accepted so far, and only that, has its rows and its task.
    names = set(Site.objects.values_list("name", flat=True))
    assert all(is_site_name(name) for name in names)
    assert Job.objects.count() == OrmQ.objects.count() == len(names)


@pytest.mark.django_db
@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"]
    ),
)
def test_the_api_never_answers_5xx_to_any_bytes(api, fresh_throttle_counts, raw, content_type):
    response = api.generic("POST", "/api/sites", raw, content_type=content_type)
    assert response.status_code < 500, (raw, content_type, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    event(f"status {response.status_code}")
