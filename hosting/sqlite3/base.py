"""Django's SQLite backend, creating the database file readable by its owner only.

The control database holds sessions, API tokens and job records; SQLite
creates its file with the process umask (usually world-readable). The file
is created first with mode 0600 (an existing one is tightened by path), and
SQLite gives its -wal and -shm files the database file's mode.

An existing database file is never opened here: closing any descriptor of a
file drops every POSIX lock the process holds on it, including the locks of
this process's other SQLite connections (other threads), which corrupts the
database. A new file is created and closed under a lock that every new
connection of the process takes, so no connection can hold it open then.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

from django.db.backends.sqlite3 import base

_creating = threading.Lock()


def make_private(database: str) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)  # by path: no descriptor, no lock dropped
        return
    os.close(fd)  # new and empty: no connection of this process has it open


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        with _creating:
            make_private(str(conn_params.get("database", "")))
            return super().get_new_connection(conn_params)
