"""Child processes of the worker (restic, mariadb-dump, mariadb) that end with it."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: children then outlive a killed worker
    _libc = None


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=...)``: the child is killed when the thread that started it dies.

    A worker killed in the middle of a backup or a restore must not leave a
    restic or a mariadb loader running: the job's next attempt would meet it
    (writing into the staging database it recreates, holding a lock).
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
