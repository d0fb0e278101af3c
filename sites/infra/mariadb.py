"""MariaDB admin connection (state-01), through mysqlclient with bound parameters."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

from django.conf import settings

from sites.infra.errors import ForeignResource, InfraError

_IDENT = re.compile(r"[a-z0-9_]{1,64}")
OWNER_PREFIX = f"owner={settings.WPFLEET_OWNER} site="


def quote_ident(name: str) -> str:
    """Backtick-quote an identifier we generated; anything else is a bug."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"refusing to use {name!r} as a MariaDB identifier")
    return f"`{name}`"


def grant_pattern(database: str) -> str:
    # In GRANT ... ON db.*, `_` and `%` are wildcards: wp_a_b would also match
    # wp_aXb. Escape them so a grant covers exactly one database.
    quote_ident(database)
    return "`" + database.replace("_", r"\_").replace("%", r"\%") + "`"


def owner_comment(site: str) -> str:
    # MariaDB has no labels; the database's comment marks it as ours.
    return f"{OWNER_PREFIX}{site}"


def site_of_comment(comment: str) -> str | None:
    return comment[len(OWNER_PREFIX):] if comment.startswith(OWNER_PREFIX) else None


class MariaDBAdmin:
    def __init__(self) -> None:
        self._config = settings.WPFLEET_DB_ADMIN

    @contextmanager
    def cursor(self) -> Iterator:
        import MySQLdb

        conn = None
        try:
            conn = MySQLdb.connect(
                host=self._config["host"],
                port=self._config["port"],
                user=self._config["user"],
                password=self._config["password"],
                connect_timeout=self._config["connect_timeout"],
                autocommit=True,
                charset="utf8mb4",
            )
            cur = conn.cursor()
            yield cur
        except MySQLdb.Error as exc:
            code = exc.args[0] if exc.args else "?"
            # exc.args[1] is the server's message; it never carries bound values
            # of a statement that parsed, and we never build statements from input.
            message = exc.args[1] if len(exc.args) > 1 else exc.__class__.__name__
            raise InfraError("mariadb", f"({code}) {message}") from None
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass

    def ping(self) -> None:
        with self.cursor() as cur:
            cur.execute("SELECT 1")

    def database_comment(self, database: str) -> str | None:
        """The database's comment ('' if none), or None when it does not exist."""
        with self.cursor() as cur:
            cur.execute(
                "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,)
            )
            row = cur.fetchone()
        return None if row is None else (row[0] or "")

    def database_exists(self, database: str) -> bool:
        return self.database_comment(database) is not None

    def user_exists(self, user: str, host: str) -> bool:
        with self.cursor() as cur:
            cur.execute("SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", (user, host))
            return cur.fetchone() is not None

    def ensure_site_database(
        self, site: str, database: str, user: str, host: str, password: str, max_connections: int
    ) -> None:
        comment = owner_comment(site)
        existing = self.database_comment(database)
        if existing is not None and existing != comment:
            raise ForeignResource("mariadb", f"database {database} exists and is not wpfleet's; it was left untouched")
        with self.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci COMMENT %s",
                (comment,),
            )
            limit = int(max_connections)
            cur.execute(
                f"CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS {limit}",
                (user, host, password),
            )
            # A user left by an earlier attempt gets this attempt's password.
            cur.execute(
                f"ALTER USER %s@%s IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS {limit}", (user, host, password)
            )
            cur.execute(f"GRANT ALL PRIVILEGES ON {grant_pattern(database)}.* TO %s@%s", (user, host))

    def drop_site_database(self, site: str, database: str, user: str, host: str) -> str | None:
        note = None
        with self.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
        comment = self.database_comment(database)
        if comment is None:
            return None
        if comment != owner_comment(site):
            return f"database {database} is not wpfleet's: left untouched"
        with self.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
        return note

    def site_databases(self) -> dict[str, str]:
        """{database: site} of every database our owner comment marks as a site's."""
        with self.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA")
            rows = cur.fetchall()
        return {name: site for name, comment in rows if (site := site_of_comment(comment or ""))}
