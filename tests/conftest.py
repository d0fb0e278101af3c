from __future__ import annotations

import secrets

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from sites.permissions import GROUPS

# Test modules whose subject does not depend on which control database the
# panel uses (SQLite or MariaDB): what sites serve, what WordPress and the
# page cache do, backups' contents, the admin in a browser, the API's
# fuzzing (its validation runs before any query). The control database only
# holds their rows. They are marked ``one_db``: CI (.ci/run) runs them on
# SQLite only, and everything else on both; `make test` runs them all.
ONE_DB_MODULES = {
    "tests/integration/test_page_cache.py",
    "tests/integration/test_wordpress_access.py",
    "tests/integration/test_wordpress_ready.py",
    "tests/integration/test_backups.py",
    "tests/integration/test_domains.py",
    "tests/integration/test_lab_smoke.py",
    "tests/integration/test_disk_quota_adapter.py",
    "tests/integration/test_cron.py",
    "tests/integration/test_usage_and_logs.py",
    "tests/integration/test_day_two.py",
    "tests/browser/test_admin_browser.py",
    "tests/unit/test_api_fuzz.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("::", 1)[0] in ONE_DB_MODULES:
            item.add_marker(pytest.mark.one_db)


def unique_name(prefix: str = "t") -> str:
    """A site name no other test (or a panel running beside the tests) will use."""
    return prefix + secrets.token_hex(5)


def user_in_group(username: str, group: str | None):
    """A staff user in one of the groups the migrations ship (or in none)."""
    # No password (hashing one costs a quarter second per test): the API uses tokens.
    user = get_user_model().objects.create_user(username=username, password=None, is_staff=True)
    if group is not None:
        user.groups.add(shipped_group(group))
    return user


def shipped_group(name: str) -> Group:
    """The group as the migration made it; transactional tests flush it away, so it is made again the same way."""
    group, created = Group.objects.get_or_create(name=name)
    if created:
        for permission in GROUPS[name]:
            app_label, codename = permission.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def staff_user(db):
    """An operator: the 'Site operators' group, all the rights on sites."""
    return user_in_group("operator", "Site operators")


@pytest.fixture
def token(staff_user) -> str:
    return Token.objects.create(user=staff_user).key


@pytest.fixture
def api(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()
