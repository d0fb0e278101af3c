"""Putting a backup back into a site: built beside the live copy, then switched.

The database is loaded into ``wp_<site>_restore`` and the files unpacked
into ``.wpfleet-restore/`` inside the site's volume, while the site serves
on unchanged; its URLs are rewritten there when the backup called another
hostname home (``php/search_replace.php``, serialization-safe). Only then
does ``switch`` move the tables (one atomic RENAME TABLE) and the top-level
entries of the files (renames within the volume); what was live goes to
``wp_<site>_old`` and ``.wpfleet-old/``, so that ``switch_back`` can return
to it until ``discard_old``. nginx never serves ``/.wpfleet-*`` (the server
block refuses every dot-path but ``/.well-known/``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sites.infra.docker_host import DockerHost
from sites.infra.errors import InfraError
from sites.infra.mariadb import MariaDBAdmin
from sites.infra.restic import BackupRepository
from sites.models.naming import SiteNames

WEBROOT = "/var/www/html"
STAGING_DIR = ".wpfleet-restore"
OLD_DIR = ".wpfleet-old"
# The files part is a tar of WEBROOT made by the archive API: one top directory.
ARCHIVE_TOP = Path(WEBROOT).name
SEARCH_REPLACE = (Path(__file__).parent / "php" / "search_replace.php").read_text()
RESULT_MARKER = "WPFLEET-RESULT "

# sh scripts run in the site's PHP container as root (the restored files keep
# their owners). Each is one exec; it refuses work directories that are
# symlinks (the tenant, www-data, can write the webroot).
_COMMON = r"""
set -eu
cd /var/www/html
for d in .wpfleet-restore .wpfleet-old; do
  if [ -L "$d" ]; then echo "$d is a symlink: refused" >&2; exit 3; fi
done
# move_all SRC DST: every top-level entry of SRC (but the work directories)
# into DST, each under its own name (-T: never into a directory of that name).
move_all() {
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    case "${e##*/}" in .wpfleet-*) continue ;; esac
    mv -T -- "$e" "$2/${e##*/}"
  done
}
"""
# The live files go aside (the marker says all of them did), then the staged ones come in.
_SWITCH = (
    _COMMON
    + r"""
rm -rf .wpfleet-old
mkdir .wpfleet-old
move_all . .wpfleet-old
touch .wpfleet-old/.wpfleet-moved
move_all .wpfleet-restore/html .
"""
)
# Back to the files of before the switch, from any point of it: when all the
# live ones were moved aside, what is live now is (some of) the restored
# ones and goes; otherwise only some originals were moved, and come back.
_SWITCH_BACK = (
    _COMMON
    + r"""
[ -d .wpfleet-old ] || exit 0
if [ -e .wpfleet-old/.wpfleet-moved ]; then
  rm -rf .wpfleet-restore
  mkdir -p .wpfleet-restore/html
  move_all . .wpfleet-restore/html
fi
move_all .wpfleet-old .
rm -rf .wpfleet-old .wpfleet-restore
"""
)


@dataclass(frozen=True)
class Source:
    """Where a restore comes from: a backup of site ``site``, its two snapshots and the URL its WordPress called home."""

    site: str
    files_snapshot: str
    database_snapshot: str
    home_url: str


def files_path(site: str) -> str:
    """The name the files part is stored under (restic groups snapshots by it)."""
    return f"/sites/{site}/files.tar"


def database_path(site: str) -> str:
    return f"/sites/{site}/database.sql"


def url_pairs(old_home: str, new_home: str) -> dict[str, str]:
    """What to replace for a site moving from one home URL to another (longest match wins)."""
    old_host = old_home.split("://", 1)[-1].rstrip("/")
    new_host = new_home.split("://", 1)[-1].rstrip("/")
    if old_host == new_host:
        return {}
    return {
        f"http://{old_host}": f"https://{new_host}",
        f"//{old_host}": f"//{new_host}",
        # JSON inside posts (block attributes) escapes slashes.
        f"\\/\\/{old_host}": f"\\/\\/{new_host}",
    }


class Restorer:
    def __init__(self, site: str, docker: DockerHost, db: MariaDBAdmin, repository: BackupRepository):
        self.names = SiteNames(site)
        self.docker = docker
        self.db = db
        self.repository = repository

    @property
    def staging_database(self) -> str:
        return f"{self.names.database}_restore"

    @property
    def old_database(self) -> str:
        return f"{self.names.database}_old"

    def _sh(self, script: str, *args: str) -> None:
        code, output = self.docker.exec(self.names.php, ["sh", "-c", script, "sh", *args])
        if code != 0:
            raise InfraError("restore", f"in {self.names.php}: {output[-300:] or f'exit {code}'}")

    # --- building beside ------------------------------------------------------------

    def stage(self, source: Source, home_url: str) -> None:
        """Database and files of the backup beside the live ones; URLs rewritten for ``home_url``."""
        self.discard_staging()
        self._sh(f"mkdir {WEBROOT}/{STAGING_DIR}")
        errors: list[BaseException] = []
        files = threading.Thread(target=self._catch(self._stage_files, errors), args=(source,))
        files.start()
        try:
            self._stage_database(source)
        finally:
            files.join()
        if errors:
            raise errors[0]
        pairs = url_pairs(source.home_url, home_url)
        if pairs:
            self.rewrite_urls(pairs)

    @staticmethod
    def _catch(func, errors: list[BaseException]):
        def run(*args):
            try:
                func(*args)
            except BaseException as exc:  # handed to the calling thread
                errors.append(exc)

        return run

    def _stage_files(self, source: Source) -> None:
        dump = self.repository.dump(source.files_snapshot, files_path(source.site))
        try:
            assert dump.stdout is not None
            self.docker.extract(self.names.php, f"{WEBROOT}/{STAGING_DIR}", dump.stdout)
        finally:
            if dump.stdout is not None:
                dump.stdout.close()
            self.repository.check(dump, doing="reading the files")
        # The archive API unpacks the whole stream or fails; check it is all there.
        self._sh(f"test -d {WEBROOT}/{STAGING_DIR}/{ARCHIVE_TOP}/wp-includes")

    def _stage_database(self, source: Source) -> None:
        self.db.recreate_database(self.names.site, self.staging_database)
        dump = self.repository.dump(source.database_snapshot, database_path(source.site))
        assert dump.stdout is not None
        load = self.db.load_process(self.staging_database, dump.stdout)
        dump.stdout.close()  # the loader holds it now
        try:
            self.db.finish(load, "loading the database")
        finally:
            self.repository.check(dump, doing="reading the database")
        if "wp_options" not in self.db.tables(self.staging_database):
            raise InfraError("restore", "the backup's database holds no WordPress (no wp_options table)")

    def rewrite_urls(self, pairs: dict[str, str]) -> dict:
        """Replace URLs in the staging database, with the site's own account, in its PHP container."""
        account = (self.names.db_user, settings.WPFLEET_DB_USER_HOST)
        self.db.grant(self.staging_database, *account)
        try:
            code, output = self.docker.exec(
                self.names.php,
                ["php", "-r", SEARCH_REPLACE.removeprefix("<?php")],
                user="www-data",
                environment={"WPFLEET_DB": self.staging_database, "WPFLEET_PAIRS": json.dumps(pairs)},
            )
        finally:
            self.db.revoke(self.staging_database, *account)
        marker = output.rfind(RESULT_MARKER)
        if code != 0 or marker < 0:
            last = output.splitlines()[-1][:300] if output else f"exit {code}"
            raise InfraError("restore", f"rewriting URLs failed: {last}")
        return json.loads(output[marker + len(RESULT_MARKER) :].splitlines()[0])

    # --- switching ---------------------------------------------------------------------

    def switch(self) -> None:
        """The staged copy becomes the live one; the live one is kept aside."""
        site = self.names.site
        if self.db.database_exists(self.old_database) and self.db.tables(self.old_database):
            # The copy a switch set aside is what the site was: never dropped here.
            raise InfraError("restore", f"{self.old_database} holds an earlier switch's tables: switch back first")
        self.db.recreate_database(site, self.old_database)
        self.db.swap_tables(site, self.names.database, self.staging_database, self.old_database)
        self._sh(_SWITCH)

    def switch_back(self) -> None:
        """What was live before ``switch`` is live again, from any point of it (idempotent)."""
        site = self.names.site
        if self.db.database_exists(self.old_database) and self.db.tables(self.old_database):
            self.db.recreate_database(site, self.staging_database)
            self.db.swap_tables(site, self.names.database, self.old_database, self.staging_database)
        self._sh(_SWITCH_BACK)
        self.discard_staging()
        self.discard_old()

    def discard_old(self) -> None:
        self.db.drop_database(self.names.site, self.old_database)
        self._sh(f"rm -rf {WEBROOT}/{OLD_DIR}")

    def discard_staging(self) -> None:
        # A worker that died during the URL rewrite left the site's account its grant.
        self.db.revoke(self.staging_database, self.names.db_user, settings.WPFLEET_DB_USER_HOST)
        self.db.drop_database(self.names.site, self.staging_database)
        self._sh(f"rm -rf {WEBROOT}/{STAGING_DIR}")

    def leftovers(self) -> list[str]:
        """What a restore left of itself (none after one that ended, well or not)."""
        found = [db for db in (self.staging_database, self.old_database) if self.db.database_exists(db)]
        for directory in (STAGING_DIR, OLD_DIR):
            if self.docker.container(self.names.php) is not None:
                code, _ = self.docker.exec(self.names.php, ["test", "-e", f"{WEBROOT}/{directory}"])
                if code == 0:
                    found.append(f"{self.names.php}:{WEBROOT}/{directory}")
        return found
