"""MariaDB admin connection (state-01), through mysqlclient with bound parameters."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from django.conf import settings

from hosting.env import DbAdmin
from sites.infra.errors import ForeignResource, InfraError
from sites.infra.processes import die_with_parent

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
    return comment[len(OWNER_PREFIX) :] if comment.startswith(OWNER_PREFIX) else None


class MariaDBAdmin:
    def __init__(self, account: DbAdmin | None = None) -> None:
        # Another account than the panel's on the sites' server: the control
        # database's own, for the panel's backup (sites.ops.backups).
        self._config = account or settings.WPFLEET_DB_ADMIN

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

    def connection_counts(self) -> tuple[int, int]:
        """(Threads_connected, max_connections) of the server, this connection counted (sites.ops.capacity)."""
        with self.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            row = cur.fetchone()
            cur.execute("SELECT @@max_connections")
            limit = cur.fetchone()
        if row is None or limit is None:
            raise InfraError("mariadb", "the server did not report Threads_connected and max_connections")
        return int(row[1]), int(limit[0])

    def database_comment(self, database: str) -> str | None:
        """The database's comment ('' if none), or None when it does not exist."""
        with self.cursor() as cur:
            cur.execute("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
            row = cur.fetchone()
        return None if row is None else (row[0] or "")

    def database_exists(self, database: str) -> bool:
        return self.database_comment(database) is not None

    def user_exists(self, user: str, host: str) -> bool:
        # The panel may read only these two columns of the account table,
        # never the password hashes beside them (docs/deploy.md).
        with self.cursor() as cur:
            cur.execute("SELECT 1 FROM mysql.global_priv WHERE User = %s AND Host = %s", (user, host))
            return cur.fetchone() is not None

    def user_hosts(self, user: str) -> list[str]:
        """Every host an account of this name exists at."""
        with self.cursor() as cur:
            cur.execute("SELECT Host FROM mysql.global_priv WHERE User = %s ORDER BY Host", (user,))
            return [row[0] for row in cur.fetchall()]

    def users_at(self, host: str) -> set[str]:
        with self.cursor() as cur:
            cur.execute("SELECT User FROM mysql.global_priv WHERE Host = %s", (host,))
            return {row[0] for row in cur.fetchall()}

    # --- ownership of users -------------------------------------------------------------
    #
    # MariaDB has no comment on an account, so the accounts wpfleet creates are
    # recorded in a table of its own schema, in two phases: the record is
    # written *pending* before CREATE USER and marked *created* once CREATE
    # USER succeeded. A crash in between leaves a pending record:
    #
    # * without an account: ours to create (the next attempt does);
    # * with an account: not provably ours (someone else may have created it
    #   in the gap), so it is foreign: never altered nor dropped.
    #
    # An account without a record was made by someone else and is never
    # touched either. Records from before the two phases have no state column:
    # it is added with the default 'created', what they meant then.

    PENDING, CREATED = "pending", "created"

    def _ensure_meta(self, cur) -> None:
        schema = quote_ident(settings.WPFLEET_DB_META_SCHEMA)
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {schema} CHARACTER SET utf8mb4")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.owned_users ("
            " user VARCHAR(128) NOT NULL, host VARCHAR(255) NOT NULL,"
            " owner VARCHAR(64) NOT NULL, site VARCHAR(64) NOT NULL,"
            " created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
            " state VARCHAR(16) NOT NULL DEFAULT 'created',"
            " PRIMARY KEY (user, host)) ENGINE=InnoDB"
        )
        # A table made before the two phases: its rows are accounts created.
        cur.execute(
            "SELECT 1 FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'owned_users' AND COLUMN_NAME = 'state'",
            (settings.WPFLEET_DB_META_SCHEMA,),
        )
        if cur.fetchone() is None:
            cur.execute(
                f"ALTER TABLE {schema}.owned_users"
                " ADD COLUMN IF NOT EXISTS state VARCHAR(16) NOT NULL DEFAULT 'created'"
            )

    def user_record(self, user: str, host: str) -> tuple[str, str, str] | None:
        """(owner, site, state) recorded for the account, or None when wpfleet never claimed it."""
        with self.cursor() as cur:
            self._ensure_meta(cur)
            cur.execute(
                f"SELECT owner, site, state FROM {quote_ident(settings.WPFLEET_DB_META_SCHEMA)}.owned_users"
                " WHERE user = %s AND host = %s",
                (user, host),
            )
            row = cur.fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def user_owner(self, user: str, host: str) -> tuple[str, str] | None:
        """(owner, site) of an account wpfleet created; None when it never claimed it or never finished creating it."""
        record = self.user_record(user, host)
        return None if record is None or record[2] != self.CREATED else (record[0], record[1])

    def owned_users(self) -> dict[tuple[str, str], str]:
        """{(user, host): site} of every account recorded for this owner (pending claims too: cleanup ends them)."""
        with self.cursor() as cur:
            self._ensure_meta(cur)
            cur.execute(
                f"SELECT user, host, site FROM {quote_ident(settings.WPFLEET_DB_META_SCHEMA)}.owned_users"
                " WHERE owner = %s",
                (settings.WPFLEET_OWNER,),
            )
            return {(user, host): site for user, host, site in cur.fetchall()}

    def _claim_user(self, cur, site: str, user: str, host: str) -> bool:
        """Record the account as this site's, pending; False if it is recorded for someone else."""
        table = f"{quote_ident(settings.WPFLEET_DB_META_SCHEMA)}.owned_users"
        cur.execute(
            f"INSERT IGNORE INTO {table} (user, host, owner, site, state) VALUES (%s, %s, %s, %s, %s)",
            (user, host, settings.WPFLEET_OWNER, site, self.PENDING),
        )
        cur.execute(f"SELECT owner, site FROM {table} WHERE user = %s AND host = %s", (user, host))
        return tuple(cur.fetchone() or ()) == (settings.WPFLEET_OWNER, site)

    def _mark_created(self, cur, site: str, user: str, host: str) -> None:
        cur.execute(
            f"UPDATE {quote_ident(settings.WPFLEET_DB_META_SCHEMA)}.owned_users SET state = %s"
            " WHERE user = %s AND host = %s AND owner = %s AND site = %s",
            (self.CREATED, user, host, settings.WPFLEET_OWNER, site),
        )

    def _release_user(self, cur, site: str, user: str, host: str) -> None:
        cur.execute(
            f"DELETE FROM {quote_ident(settings.WPFLEET_DB_META_SCHEMA)}.owned_users"
            " WHERE user = %s AND host = %s AND owner = %s AND site = %s",
            (user, host, settings.WPFLEET_OWNER, site),
        )

    def ensure_site_database(
        self,
        site: str,
        database: str,
        user: str,
        host: str,
        password: str,
        max_connections: int,
        max_statement_seconds: float = 0,
    ) -> None:
        import MySQLdb

        comment = owner_comment(site)
        existing = self.database_comment(database)
        if existing is not None and existing != comment:
            raise ForeignResource("mariadb", f"database {database} exists and is not wpfleet's; it was left untouched")
        limits = f"MAX_USER_CONNECTIONS {int(max_connections)}"
        if max_statement_seconds:
            # MariaDB's per-account statement timeout: a runaway query of one
            # tenant cannot hold the shared server.
            limits += f" MAX_STATEMENT_TIME {float(max_statement_seconds):g}"
        with self.cursor() as cur:
            self._ensure_meta(cur)
            recorded = self.user_record(user, host)
            exists = self.user_exists(user, host)
            if recorded is None and exists:
                raise ForeignResource(
                    "mariadb", f"database user {user}@{host} exists and is not wpfleet's; it was left untouched"
                )
            if recorded is not None and recorded[:2] != (settings.WPFLEET_OWNER, site):
                raise ForeignResource(
                    "mariadb", f"database user {user}@{host} belongs to another owner or site; it was left untouched"
                )
            if recorded is not None and recorded[2] != self.CREATED and exists:
                # Our claim, but CREATE USER never reported back: whoever made
                # this account, wpfleet cannot show it was wpfleet.
                raise ForeignResource(
                    "mariadb",
                    f"database user {user}@{host} exists and is not wpfleet's (its creation by wpfleet never"
                    " completed); it was left untouched",
                )
            if not self._claim_user(cur, site, user, host):
                raise ForeignResource(
                    "mariadb", f"database user {user}@{host} was claimed concurrently; left untouched"
                )
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci COMMENT %s",
                (comment,),
            )
            try:
                cur.execute(f"CREATE USER %s@%s IDENTIFIED BY %s WITH {limits}", (user, host, password))
            except MySQLdb.DatabaseError as exc:
                if not exc.args or exc.args[0] != 1396:  # ER_CANNOT_USER: the account exists
                    raise
                if recorded is None or recorded[2] != self.CREATED:
                    # Created by someone else between our check and our
                    # CREATE: theirs. Drop only our claim.
                    self._release_user(cur, site, user, host)
                    raise ForeignResource(
                        "mariadb", f"database user {user}@{host} appeared concurrently and is not wpfleet's"
                    ) from None
                # Ours, created by an earlier attempt: this attempt's password.
                cur.execute(f"ALTER USER %s@%s IDENTIFIED BY %s WITH {limits}", (user, host, password))
            self._mark_created(cur, site, user, host)
            cur.execute(f"GRANT ALL PRIVILEGES ON {grant_pattern(database)}.* TO %s@%s", (user, host))

    def drop_site_database(self, site: str, database: str, user: str, host: str) -> str | None:
        notes = [note] if (note := self.drop_site_user(site, user, host)) else []
        comment = self.database_comment(database)
        if comment is not None and comment != owner_comment(site):
            notes.append(f"database {database} is not wpfleet's: left untouched")
        elif comment is not None:
            with self.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
        return "; ".join(notes) or None

    def drop_site_user(self, site: str, user: str, host: str) -> str | None:
        """Drop the site's account at ``host`` if wpfleet recorded it as the site's; a note when one is left."""
        notes = []
        record = self.user_record(user, host)
        ours = record is not None and record[:2] == (settings.WPFLEET_OWNER, site)
        if ours and record is not None and record[2] == self.CREATED:
            with self.cursor() as cur:
                cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
                self._release_user(cur, site, user, host)
        else:
            if self.user_exists(user, host):
                notes.append(f"database user {user}@{host} is not wpfleet's: left untouched")
            if ours:
                # A claim whose CREATE USER never completed: nothing of ours to drop.
                with self.cursor() as cur:
                    self._release_user(cur, site, user, host)
        return "; ".join(notes) or None

    def wordpress_siteurl(self, database: str) -> str | None:
        """The installed WordPress's siteurl option, or None when it is not installed there."""
        try:
            with self.cursor() as cur:
                cur.execute(
                    f"SELECT option_value FROM {quote_ident(database)}.wp_options WHERE option_name = 'siteurl'"
                )
                row = cur.fetchone()
        except InfraError as exc:
            # 1146: no such table, 1049: no such database: not installed.
            if exc.message.startswith(("(1146)", "(1049)")):
                return None
            raise
        return None if row is None else str(row[0])

    def cron_schedules(self, databases: list[str]) -> dict[str, str]:
        """Each installed WordPress's ``cron`` option (its scheduled events, PHP-serialized), one connection for all.

        A database without it (not installed, not readable) is left out.
        """
        import MySQLdb

        found: dict[str, str] = {}
        with self.cursor() as cur:
            for database in databases:
                try:
                    cur.execute(
                        f"SELECT option_value FROM {quote_ident(database)}.wp_options WHERE option_name = 'cron'"
                    )
                    row = cur.fetchone()
                except MySQLdb.Error:
                    continue  # not installed (1146, 1049): that site runs as it would have
                if row is not None:
                    found[database] = row[0].decode() if isinstance(row[0], bytes) else str(row[0])
        return found

    def installed_databases(self) -> set[str]:
        """The wp_* databases that hold a WordPress options table (one query for all sites)."""
        with self.cursor() as cur:
            cur.execute(
                "SELECT table_schema FROM information_schema.TABLES WHERE table_name = 'wp_options'"
                " AND table_schema LIKE 'wp\\_%%'"
            )
            return {row[0] for row in cur.fetchall()}

    def clear_database(self, site: str, database: str) -> str | None:
        """Drop every table of the site's database (WordPress's install), if the database is ours."""
        comment = self.database_comment(database)
        if comment is None:
            return None
        if comment != owner_comment(site):
            return f"database {database} is not wpfleet's: left untouched"
        with self.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.TABLES WHERE table_schema = %s", (database,))
            tables = [row[0] for row in cur.fetchall()]
            for table in tables:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(database)}.{quote_ident(table.lower())}")
        return None

    def site_databases(self) -> dict[str, str]:
        """{database: site} of every database our owner comment marks as a site's."""
        with self.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA")
            rows = cur.fetchall()
        return {name: site for name, comment in rows if (site := site_of_comment(comment or ""))}

    # --- whole databases as streams (backups) ---------------------------------------------
    #
    # mariadb-dump and mariadb run on the panel's host with the panel's account;
    # its password goes to them through a pipe (--defaults-extra-file=/dev/fd/N),
    # never an argument or the environment.

    def _client(self, program: str, args: list[str], **popen: Any) -> subprocess.Popen:
        read, write = os.pipe()
        try:
            quoted = self._config["password"].replace("\\", "\\\\").replace('"', '\\"')
            os.write(write, f'[client]\npassword="{quoted}"\n'.encode())
        finally:
            os.close(write)
        try:
            return subprocess.Popen(
                [
                    program,
                    f"--defaults-extra-file=/dev/fd/{read}",
                    f"--host={self._config['host']}",
                    f"--port={self._config['port']}",
                    f"--user={self._config['user']}",
                    "--protocol=tcp",
                    "--default-character-set=utf8mb4",
                    *args,
                ],
                pass_fds=(read,),
                stderr=subprocess.PIPE,
                preexec_fn=die_with_parent,
                **popen,
            )
        except FileNotFoundError:
            raise InfraError("mariadb", f"{program} is not installed (apt install mariadb-client)") from None
        finally:
            os.close(read)

    def dump_process(self, database: str) -> subprocess.Popen:
        """``mariadb-dump`` of one database on the process's stdout: one transaction's view, no table locks."""
        quote_ident(database)
        return self._client(
            "mariadb-dump",
            ["--single-transaction", "--quick", "--skip-lock-tables", "--hex-blob", "--no-tablespaces", database],
            stdout=subprocess.PIPE,
        )

    def load_process(self, database: str, source: IO[bytes]) -> subprocess.Popen:
        """``mariadb`` running the SQL it reads from ``source`` in ``database``."""
        quote_ident(database)
        return self._client("mariadb", ["--batch", database], stdin=source, stdout=subprocess.DEVNULL)

    @staticmethod
    def finish(process: subprocess.Popen, doing: str) -> None:
        """Wait for a client; an InfraError with its last error line if it failed."""
        err = process.stderr.read() if process.stderr else b""
        code = process.wait()
        if code != 0:
            lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
            raise InfraError("mariadb", f"{doing}: {lines[-1][:300] if lines else f'exit {code}'}")

    def recreate_database(self, site: str, database: str) -> None:
        """An empty database of the site's (a restore's staging copy); one of someone else's is refused."""
        comment = self.database_comment(database)
        if comment is not None and comment != owner_comment(site):
            raise ForeignResource("mariadb", f"database {database} exists and is not wpfleet's; it was left untouched")
        with self.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
            cur.execute(
                f"CREATE DATABASE {quote_ident(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci COMMENT %s",
                (owner_comment(site),),
            )

    def drop_database(self, site: str, database: str) -> str | None:
        """Drop one of the site's databases if it is ours (a note otherwise)."""
        comment = self.database_comment(database)
        if comment is None:
            return None
        if comment != owner_comment(site):
            return f"database {database} is not wpfleet's: left untouched"
        with self.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
        return None

    def tables(self, database: str) -> list[str]:
        with self.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.TABLES WHERE table_schema = %s", (database,))
            return sorted(row[0] for row in cur.fetchall())

    def swap_tables(self, site: str, live: str, staged: str, old: str) -> None:
        """Move every table of ``live`` to ``old`` and every table of ``staged`` to ``live``, in one statement.

        RENAME TABLE of several tables is atomic: WordPress sees the old
        tables or the new ones, never a mix, and never none.
        """
        for database in (live, staged, old):
            if self.database_comment(database) != owner_comment(site):
                raise InfraError("mariadb", f"database {database} is missing or not the site's: no swap")
        moves = [(live, table, old) for table in self.tables(live)] + [
            (staged, table, live) for table in self.tables(staged)
        ]
        if not moves:
            return
        clauses = ", ".join(
            f"{quote_ident(src)}.{_table(table)} TO {quote_ident(dst)}.{_table(table)}" for src, table, dst in moves
        )
        with self.cursor() as cur:
            cur.execute(f"RENAME TABLE {clauses}")

    def grant(self, database: str, user: str, host: str) -> None:
        with self.cursor() as cur:
            cur.execute(f"GRANT ALL PRIVILEGES ON {grant_pattern(database)}.* TO %s@%s", (user, host))

    def revoke(self, database: str, user: str, host: str) -> None:
        import MySQLdb

        with self.cursor() as cur:
            try:
                cur.execute(f"REVOKE ALL PRIVILEGES ON {grant_pattern(database)}.* FROM %s@%s", (user, host))
            except MySQLdb.DatabaseError as exc:
                # no such grant (1141), no such account (1133, 1269)
                if not exc.args or exc.args[0] not in (1141, 1133, 1269):
                    raise

    def wordpress_options(self, database: str, names: tuple[str, ...]) -> dict[str, str]:
        """Some of WordPress's options, as stored ({} when it is not installed)."""
        placeholders = ", ".join(["%s"] * len(names))
        try:
            with self.cursor() as cur:
                cur.execute(
                    f"SELECT option_name, option_value FROM {quote_ident(database)}.wp_options"
                    f" WHERE option_name IN ({placeholders})",
                    names,
                )
                return {str(name): str(value) for name, value in cur.fetchall()}
        except InfraError as exc:
            if exc.message.startswith(("(1146)", "(1049)")):
                return {}
            raise


_TABLE = re.compile(r"[A-Za-z0-9_$]{1,64}")


def _table(name: str) -> str:
    """A table name found in a site's database (a plugin's may have capitals or $)."""
    if not _TABLE.fullmatch(name):
        raise InfraError("mariadb", f"table name {name!r} is not one the panel moves")
    return f"`{name}`"
