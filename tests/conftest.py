from __future__ import annotations

import secrets

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def unique_name(prefix: str = "t") -> str:
    """A site name no other test (or a panel running beside the tests) will use."""
    return prefix + secrets.token_hex(5)


@pytest.fixture
def staff_user(db):
    # No password (hashing one costs a quarter second per test): the API uses tokens.
    return get_user_model().objects.create_user(username="operator", password=None, is_staff=True)


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
