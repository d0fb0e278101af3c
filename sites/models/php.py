"""A site's PHP: its version, its php.ini values and its disk quota, validated for the API and the admin.

A site stores only the values it changed (``Site.php_settings``); the
others are ``PHP_DEFAULTS``. Sizes are kept as PHP writes them ("256M").
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

# What a site gets unless it sets its own (WordPress's own recommendations
# for a single site; PHP's stock 2M upload is too small for media).
PHP_DEFAULTS: dict[str, str | int] = {
    "memory_limit": "256M",
    "upload_max_filesize": "64M",
    "post_max_size": "64M",
    "max_execution_time": 60,
}
PHP_SIZES = ("memory_limit", "upload_max_filesize", "post_max_size")
MIN_MEMORY_LIMIT = 64 * 1024**2  # WordPress's admin needs more than 40M
# WordPress itself takes about 70 MB: a smaller quota could not even hold it.
MIN_DISK_QUOTA = 256 * 1024**2

_SIZE = re.compile(r"\s*([0-9]+)\s*([KMG]?)B?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def size_bytes(value: object, field: str) -> int:
    """Bytes of a size given as PHP writes it ("64M", "1G") or as a whole number of bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(f"{field} must be a size like 64M or 1G", code="invalid")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE.fullmatch(value)
        if not match:
            raise ValidationError(f"{field} must be a size like 64M or 1G, not {value!r}", code="invalid")
        number, unit = int(match.group(1)), match.group(2).upper()
    result = number * _UNITS[unit]
    if result <= 0:
        raise ValidationError(f"{field} must be more than zero", code="invalid")
    return result


def php_size(nbytes: int) -> str:
    """A size as PHP's ini writes it: the largest exact unit."""
    for unit in ("G", "M", "K"):
        if nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return str(nbytes)


def human(nbytes: int) -> str:
    return php_size(nbytes) if nbytes % 1024 == 0 else f"{nbytes} bytes"


def validate_php_version(value: object) -> str:
    offered = tuple(settings.WPFLEET_PHP_VERSIONS)
    if not isinstance(value, str) or value not in offered:
        raise ValidationError(f"php_version must be one of {', '.join(offered)}", code="invalid")
    return value


def validate_php_settings(value: object, current: dict[str, str | int]) -> dict[str, str | int]:
    """The site's php.ini overrides after applying ``value`` (a partial dict) to ``current``.

    Every value is checked against the bounds from the settings
    (WPFLEET_PHP_MEMORY_LIMIT_MAX, WPFLEET_PHP_UPLOAD_MAX,
    WPFLEET_PHP_EXECUTION_MAX_SECONDS); an unknown key is refused.
    """
    if not isinstance(value, dict) or not value:
        raise ValidationError("php must be an object of php.ini settings", code="invalid")
    unknown = sorted(str(key) for key in value if key not in PHP_DEFAULTS)
    if unknown:
        raise ValidationError(
            f"unknown php setting(s): {', '.join(unknown)} (allowed: {', '.join(PHP_DEFAULTS)})", code="invalid"
        )
    result = dict(current)
    for key, raw in value.items():
        if key == "max_execution_time":
            top = settings.WPFLEET_PHP_EXECUTION_MAX_SECONDS
            if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= top:
                raise ValidationError(f"max_execution_time must be a whole number of seconds, 1 to {top}")
            result[key] = raw
            continue
        nbytes = size_bytes(raw, key)
        if key == "memory_limit":
            low, top = MIN_MEMORY_LIMIT, settings.WPFLEET_PHP_MEMORY_LIMIT_MAX
        else:
            low, top = 1024**2, settings.WPFLEET_PHP_UPLOAD_MAX
        if not low <= nbytes <= top:
            raise ValidationError(f"{key} must be between {human(low)} and {human(top)}", code="invalid")
        result[key] = php_size(nbytes)
    effective = effective_php_settings(result)
    if size_bytes(effective["post_max_size"], "post_max_size") < size_bytes(
        effective["upload_max_filesize"], "upload_max_filesize"
    ):
        # PHP drops a whole request larger than post_max_size: an upload
        # allowed by upload_max_filesize would fail anyway.
        raise ValidationError("post_max_size must be at least upload_max_filesize", code="invalid")
    # Only what differs from the defaults is kept.
    return {key: val for key, val in result.items() if PHP_DEFAULTS.get(key) != val}


def effective_php_settings(overrides: dict[str, str | int]) -> dict[str, str | int]:
    return {**PHP_DEFAULTS, **{key: val for key, val in overrides.items() if key in PHP_DEFAULTS}}


def validate_disk_quota(value: object) -> int:
    """A disk quota in bytes, given as "5G"/"512M" or bytes, within MIN_DISK_QUOTA and WPFLEET_DISK_QUOTA_MAX."""
    nbytes = size_bytes(value, "disk_quota")
    low, top = MIN_DISK_QUOTA, settings.WPFLEET_DISK_QUOTA_MAX
    if not low <= nbytes <= top:
        raise ValidationError(f"disk_quota must be between {human(low)} and {human(top)}", code="invalid")
    return nbytes
