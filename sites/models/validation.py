"""The one validator of site names, shared by the API and the admin."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

NAME_RULE = "Site names use only lowercase letters a-z and digits 0-9, 1 to 32 characters."
_NAME = re.compile(r"[a-z0-9]{1,32}")


def validate_site_name(value: object) -> str:
    """Return the name if it is well formed and not reserved; raise ValidationError otherwise.

    Whether the name is already taken is checked by the caller under the
    database's unique constraint, which is the only check that holds under
    concurrency.
    """
    if not isinstance(value, str):
        raise ValidationError("The site name must be a string. " + NAME_RULE, code="invalid")
    if not _NAME.fullmatch(value):
        raise ValidationError(NAME_RULE, code="invalid")
    if value in settings.WPFLEET_RESERVED_NAMES:
        raise ValidationError(f"“{value}” is reserved for the hosting infrastructure.", code="reserved")
    return value


def taken_message(name: str) -> str:
    return f"A site named “{name}” already exists."


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


# WordPress's own rule for user logins (sanitize_user with strict=true), and
# names an attacker tries first: the default is random, a chosen one is not guessable.
_ADMIN_USER = re.compile(r"[A-Za-z0-9_.@-]{3,60}")
GUESSABLE_ADMIN_USERS = frozenset({"admin", "administrator", "root", "wordpress", "wpadmin", "user", "test"})
TITLE_MAX = 200


def validate_title(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError("The title must be a string.", code="invalid")
    title = value.strip()
    if not title or len(title) > TITLE_MAX:
        raise ValidationError(f"The title must be 1 to {TITLE_MAX} characters.", code="invalid")
    if any(ord(char) < 32 or ord(char) == 127 for char in title):
        raise ValidationError("The title must not contain control characters.", code="invalid")
    return title


def validate_admin_email(value: object) -> str:
    if not isinstance(value, str) or len(value) > 254:
        raise ValidationError("The admin email must be an email address.", code="invalid")
    try:
        EmailValidator()(value)
    except ValidationError:
        raise ValidationError("The admin email must be an email address.", code="invalid") from None
    return value


def validate_admin_user(value: object) -> str:
    if not isinstance(value, str) or not _ADMIN_USER.fullmatch(value):
        raise ValidationError(
            "The admin user name uses 3 to 60 letters, digits, or _ . @ - characters.", code="invalid"
        )
    if value.lower() in GUESSABLE_ADMIN_USERS:
        raise ValidationError(f"“{value}” is the first name an attacker tries: choose another.", code="guessable")
    return value
