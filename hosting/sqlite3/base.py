"""Django's SQLite backend, creating the database file readable by its owner only.

The control database holds sessions, API tokens and job records; SQLite
creates its file with the process umask (usually world-readable). Creating
the file first with mode 0600 (and tightening an existing one) keeps it
private; SQLite gives its -wal and -shm files the database file's mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.db.backends.sqlite3 import base


def make_private(database: str) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        make_private(str(conn_params.get("database", "")))
        return super().get_new_connection(conn_params)
