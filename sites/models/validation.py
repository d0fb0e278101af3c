"""The one validator of site names, shared by the API and the admin."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

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
