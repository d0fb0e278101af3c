"""A model field whose value is stored encrypted, and never queried.

The site database passwords are needed again (the reconciler rebuilds a
missing PHP container with its password file), so they cannot be hashed; in
the control database they are Fernet tokens (AES-CBC with an HMAC), readable
only with a key from ``WPFLEET_ENCRYPTION_KEYS``. A copy of the control
database, a backup of it, or a lookup that slips past the admin reveals
nothing. The first key encrypts; every key decrypts, so a key is rotated by
putting a new one first and running ``manage.py rotate_encryption_key``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.WPFLEET_ENCRYPTION_KEYS))


def encrypt(text: str) -> str:
    return fernet().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a stored secret cannot be decrypted with any key of WPFLEET_ENCRYPTION_KEYS "
            "(a key was removed before `manage.py rotate_encryption_key` ran?)"
        ) from None


def rotate(token: str) -> str:
    """The same secret, encrypted again with the first key."""
    return fernet().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """Text kept encrypted at rest. No lookup but ``isnull`` is possible:
    filtering, ordering or searching on a secret would be an oracle for it."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_lookup(self, lookup_name: str) -> Any:
        # None makes Django refuse the lookup ("Unsupported lookup ... for EncryptedTextField").
        if lookup_name != "isnull":
            return None
        return super().get_lookup(lookup_name)
