"""The validators of what users send about sites (names, WordPress profile, domains), shared by the API and the admin."""

from __future__ import annotations

import re

import idna
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


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DOMAIN_RULE = (
    "A domain is a hostname such as shop.example.com: two or more labels of letters, digits and hyphens "
    "(international names are accepted), at most 237 characters, not an IP address."
)


def validate_domain(value: object, *, own_hostname: str = "") -> str:
    """A customer's domain in the form wpfleet stores it: lowercase ASCII (punycode), no trailing dot.

    Refused: anything that is not a hostname of two or more DNS labels, an IP
    address, and names under the panel's base domain other than the site's
    own hostname (those belong to other sites of this panel).
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise ValidationError(DOMAIN_RULE, code="invalid")
    text = value.strip().rstrip(".")
    try:
        ascii_name = idna.encode(text, uts46=True, std3_rules=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        raise ValidationError(DOMAIN_RULE, code="invalid") from None
    labels = ascii_name.split(".")
    if (
        # 253, less the suffix of its upstream alias (sites.infra.caddy.UPSTREAM_SUFFIX).
        len(ascii_name) > 237
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        # An all-numeric last label is an IPv4 literal or no public name at all.
        or labels[-1].isdigit()
    ):
        raise ValidationError(DOMAIN_RULE, code="invalid")
    base = settings.WPFLEET_BASE_DOMAIN.lower()
    if (ascii_name == base or ascii_name.endswith("." + base)) and ascii_name != own_hostname:
        raise ValidationError(
            f"Names under {base} are this panel's own site names: add a domain of the customer's.", code="reserved"
        )
    return ascii_name
