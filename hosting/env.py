"""Typed readers for configuration taken from the environment.

Every setting wpfleet reads comes through these helpers, called only from
``hosting/settings.py``, so that a bad value stops the process at start-up
with a message naming the variable instead of failing later in a job.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class DbAdmin(TypedDict):
    """WPFLEET_DB_ADMIN: the panel's connection to the sites' MariaDB."""

    host: str
    port: int
    user: str
    password: str
    connect_timeout: int


class Limits(TypedDict):
    """WPFLEET_PHP_LIMITS, WPFLEET_NGINX_LIMITS: per-container limits."""

    memory: int  # bytes
    cpus: float
    pids: int


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file of ``KEY=value`` lines (quotes optional, # comments)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if not match:
            raise ImproperlyConfigured(f"{path}:{number}: expected KEY=value")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


class Env:
    """Reads variables from the process environment, falling back to ``.env``.

    The real environment wins so that a test or a one-off command can
    override a single value without editing the file.
    """

    def __init__(self, environ: Mapping[str, str], dotenv: Mapping[str, str] | None = None):
        self._environ = environ
        self._dotenv = dotenv or {}

    def raw(self, name: str) -> str | None:
        """The variable's value; ``NAME_FILE`` names a file holding it instead.

        Secrets can so come from Docker or systemd secrets (a file readable
        by the panel only) rather than from the environment, which other
        processes and ``docker inspect`` can read.
        """
        direct = self._lookup(name)
        file_name = self._lookup(name + "_FILE")
        if file_name:
            if direct is not None:
                raise ImproperlyConfigured(f"{name} and {name}_FILE are both set; set one")
            try:
                return Path(file_name).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}") from None
        return direct

    def _lookup(self, name: str) -> str | None:
        if name in self._environ:
            return self._environ[name]
        return self._dotenv.get(name)

    def text(
        self, name: str, default: str | None = None, *, choices: tuple[str, ...] = (), allow_empty: bool = False
    ) -> str:
        value = self.raw(name)
        if value == "" and allow_empty:
            return value
        if value is None or value == "":
            if default is None:
                raise ImproperlyConfigured(f"{name} is required but not set")
            value = default
        if choices and value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
        value = self.raw(name)
        if value is None or value.strip() == "":
            result = default
        else:
            try:
                result = int(value.strip())
            except ValueError:
                raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
        self._check_range(name, result, min, max)
        return result

    def number(self, name: str, default: float, *, min: float | None = None, max: float | None = None) -> float:
        value = self.raw(name)
        if value is None or value.strip() == "":
            result = default
        else:
            try:
                result = float(value.strip())
            except ValueError:
                raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
            if result != result or result in (float("inf"), float("-inf")):
                raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
        self._check_range(name, result, min, max)
        return result

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")

    def items(self, name: str, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def pairs(self, name: str, default: dict[str, str], *, key_pattern: str = r".+") -> dict[str, str]:
        """``key=value`` items separated by commas, in their order (``8.2=image,8.4=image``)."""
        value = self.raw(name)
        if value is None or value.strip() == "":
            return dict(default)
        result: dict[str, str] = {}
        for item in (part.strip() for part in value.split(",")):
            key, sep, val = item.partition("=")
            key, val = key.strip(), val.strip()
            if not item or not sep or not val or not re.fullmatch(key_pattern, key):
                raise ImproperlyConfigured(f"{name}: {item!r} is not key=value (key like {key_pattern})")
            if key in result:
                raise ImproperlyConfigured(f"{name}: {key!r} is given twice")
            result[key] = val
        return result

    def size(self, name: str, default: str) -> int:
        """A size such as ``512m`` or ``128M`` or ``1g``, returned in bytes."""
        value = self.text(name, default)
        match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)b?\s*", value, re.IGNORECASE)
        if not match:
            raise ImproperlyConfigured(f"{name}={value!r} is not a size like 512m or 1g")
        number, unit = int(match.group(1)), match.group(2).lower()
        result = number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
        if result <= 0:
            raise ImproperlyConfigured(f"{name}={value!r} must be greater than zero")
        return result

    def network(self, name: str, default: str, *, min_prefix: int = 8, max_prefix: int = 30) -> ipaddress.IPv4Network:
        """An IPv4 network in CIDR form (``10.200.0.0/16``), its prefix within the bounds."""
        value = self.text(name, default)
        try:
            result = ipaddress.IPv4Network(value.strip(), strict=True)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}={value!r} is not an IPv4 network like 10.200.0.0/16 ({exc})") from None
        if not min_prefix <= result.prefixlen <= max_prefix:
            raise ImproperlyConfigured(f"{name}={value!r}: the prefix must be between /{min_prefix} and /{max_prefix}")
        return result

    def url(self, name: str, default: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ImproperlyConfigured(f"{name}={value!r} is not a {'/'.join(schemes)} URL with a host")
        return value.rstrip("/")

    def host_port(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not re.fullmatch(r"[A-Za-z0-9.\-]+(:\d{1,5})?", value):
            raise ImproperlyConfigured(f"{name}={value!r} is not a host or host:port")
        return value

    def database(self, name: str, default: str, *, base_dir: Path) -> dict[str, Any]:
        """A ``DATABASES`` entry from a URL: ``sqlite:///path`` or ``mysql://user:pass@host:port/db``."""
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme == "sqlite":
            path = unquote(parts.path)
            if parts.netloc or not path or path == "/":
                raise ImproperlyConfigured(
                    f"{name}: a SQLite URL looks like sqlite:///var/db.sqlite3 (relative) or sqlite:////abs/path"
                )
            file = Path(path[1:])
            if not file.is_absolute():
                file = base_dir / file
            return sqlite_database(file)
        if parts.scheme in ("mysql", "mariadb"):
            db = unquote(parts.path.lstrip("/"))
            if not parts.hostname or not db:
                raise ImproperlyConfigured(f"{name}: a MariaDB URL looks like mysql://user:password@host:3306/dbname")
            try:
                port = parts.port or 3306
            except ValueError:
                raise ImproperlyConfigured(f"{name}: the port is not a number") from None
            options = dict(parse_qsl(parts.query))
            return {
                "ENGINE": "django.db.backends.mysql",
                "NAME": db,
                "USER": unquote(parts.username or ""),
                "PASSWORD": unquote(parts.password or ""),
                "HOST": parts.hostname,
                "PORT": str(port),
                "CONN_MAX_AGE": 60,
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed", **options},
                "TEST": {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
            }
        raise ImproperlyConfigured(f"{name}={parts.scheme or value!r}: only sqlite:// and mysql:// URLs are supported")

    @staticmethod
    def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise ImproperlyConfigured(f"{name}={value} is below the minimum {low}")
        if high is not None and value > high:
            raise ImproperlyConfigured(f"{name}={value} is above the maximum {high}")


def sqlite_database(file: Path) -> dict[str, Any]:
    # The web server and several worker processes share one file: WAL lets
    # readers run beside a writer, the busy timeout waits out short locks, and
    # IMMEDIATE transactions take the write lock up front so two writers never
    # deadlock half-way through ("database is locked").
    return {
        # Django's backend, creating the file with mode 0600 (hosting/sqlite3).
        "ENGINE": "hosting.sqlite3",
        "NAME": str(file),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        },
        "TEST": {"NAME": str(file.with_name("test_" + file.name))},
    }


def load(base_dir: Path) -> Env:
    # WPFLEET_DOTENV names another file (a deployment's, or none at all for a
    # check that must not see the lab's .env).
    return Env(os.environ, read_dotenv(Path(os.environ.get("WPFLEET_DOTENV") or base_dir / ".env")))
