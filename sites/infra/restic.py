"""The backup repository: restic, run as a child process of the worker.

Everything goes in and out as streams (``--stdin`` and ``dump``): a site's
files as the tar the Docker archive API gives, its database as mariadb-dump
writes it; nothing is spooled on the panel's disk, nothing held in memory.
restic encrypts and deduplicates (a second backup of an unchanged site adds
almost nothing) and speaks to local, SFTP, S3 and B2 repositories.

The repository's password reaches restic through a pipe (``--password-file
/dev/fd/N``), never an argument, the environment or a file of ours. S3's
keys can only be given to restic in its environment (AWS_*).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from sites.infra.errors import InfraError
from sites.infra.processes import die_with_parent

WHAT = "backup repository"

# What restic says, and whether trying again can help.
_PERMANENT = (
    ("wrong password", "wrong password or no key found: check WPFLEET_BACKUP_PASSWORD"),
    ("no key found", "wrong password or no key found: check WPFLEET_BACKUP_PASSWORD"),
    ("no space left on device", "the repository's storage is full (no space left on device)"),
    ("quota exceeded", "the repository's storage is full (quota exceeded)"),
    ("does not exist", "there is no repository at WPFLEET_BACKUP_REPOSITORY (restic init it first)"),
    ("unable to open config file", "there is no repository at WPFLEET_BACKUP_REPOSITORY (restic init it first)"),
    ("permission denied", "permission denied on the repository's storage"),
)
_LOCKED = ("repository is already locked", "unable to create lock")


class RepositoryLocked(InfraError):
    """Another restic holds the lock this command needs (a prune, a backup): later."""


@dataclass(frozen=True)
class Stored:
    """What one ``restic backup`` stored: its snapshot, the bytes it read and those it added."""

    snapshot: str
    total_bytes: int
    added_bytes: int


def _describe(stderr: str, code: int) -> tuple[str, bool]:
    """One line for people from restic's stderr, and whether it is permanent."""
    lower = stderr.lower()
    for needle, message in _PERMANENT:
        if needle in lower:
            return message, True
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # restic's last line says what failed ("Fatal: ..."); never holds the password.
    return (lines[-1][:300] if lines else f"restic exited with {code}"), False


def _safe_location(repository: str) -> str:
    """The repository without a password a URL could carry (rest:https://user:secret@host/...)."""
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1@", repository)


class BackupRepository:
    def __init__(self, repository: str | None = None) -> None:
        self.repository = repository if repository is not None else settings.WPFLEET_BACKUP_REPOSITORY
        if not self.repository:
            raise InfraError(WHAT, "backups are not configured (WPFLEET_BACKUP_REPOSITORY is empty)")
        self.password = settings.WPFLEET_BACKUP_PASSWORD

    @property
    def location(self) -> str:
        return _safe_location(self.repository)

    # --- running restic ----------------------------------------------------------

    def _options(self) -> list[str]:
        options = ["--no-cache"] if not settings.VAR_DIR.is_dir() else ["--cache-dir", str(_cache_dir())]
        sftp = _sftp_command(self.repository)
        if sftp:
            options += ["-o", f"sftp.command={sftp}"]
        return options

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_REPOSITORY": self.repository,
        }
        # B2's credentials, when the worker was given them (docs/backups.md).
        env.update({name: os.environ[name] for name in ("B2_ACCOUNT_ID", "B2_ACCOUNT_KEY") if name in os.environ})
        if settings.WPFLEET_BACKUP_S3_ACCESS_KEY_ID:
            env["AWS_ACCESS_KEY_ID"] = settings.WPFLEET_BACKUP_S3_ACCESS_KEY_ID
            env["AWS_SECRET_ACCESS_KEY"] = settings.WPFLEET_BACKUP_S3_SECRET_ACCESS_KEY
        return env

    @contextmanager
    def _password_fd(self) -> Iterator[int]:
        read, write = os.pipe()
        try:
            os.write(write, self.password.encode())
        finally:
            os.close(write)
        try:
            yield read
        finally:
            os.close(read)

    def popen(self, args: Sequence[str], *, stdin: Any = None, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
        """Start ``restic ARGS``; the caller waits for it and checks it with ``check``."""
        with self._password_fd() as fd:
            try:
                return subprocess.Popen(
                    ["restic", "--password-file", f"/dev/fd/{fd}", "--quiet", *self._options(), *args],
                    stdin=stdin,
                    stdout=stdout,
                    stderr=subprocess.PIPE,
                    env=self._env(),
                    pass_fds=(fd,),
                    preexec_fn=die_with_parent,
                )
            except FileNotFoundError:
                raise InfraError(WHAT, "the restic program is not installed (apt install restic)") from None

    def check(self, process: subprocess.Popen, stderr: bytes | None = None, doing: str = "") -> None:
        """Raise the InfraError that says why restic failed, if it did."""
        code = process.wait()
        if code == 0:
            return
        text = (stderr if stderr is not None else (process.stderr.read() if process.stderr else b"")).decode(
            "utf-8", "replace"
        )
        if any(needle in text for needle in _LOCKED):
            raise RepositoryLocked(WHAT, f"{self.location} is locked by another restic ({doing or 'busy'})")
        message, permanent = _describe(text, code)
        error = InfraError(WHAT, f"{self.location}: {doing + ': ' if doing else ''}{message}")
        error.permanent = permanent
        raise error

    def run(self, args: Sequence[str], doing: str, timeout: float | None = None) -> str:
        process = self.popen(args)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise InfraError(WHAT, f"{self.location}: {doing}: no answer within {timeout:g}s") from None
        self.check(process, err, doing)
        return out.decode("utf-8", "replace")

    # --- what the panel does with it ---------------------------------------------

    def ping(self) -> None:
        """The repository answers and the password opens it (raises otherwise)."""
        self.run(["cat", "config"], "opening it", timeout=60)

    def init(self) -> bool:
        """Create the repository if there is none; False if one was there already."""
        try:
            self.ping()
            return False
        except InfraError as exc:
            if "restic init" not in exc.message:
                raise
        self.run(["init"], "creating it", timeout=300)
        return True

    def finish_backup(self, process: subprocess.Popen, doing: str) -> Stored:
        if process.stdin is not None and process.stdin.closed:
            process.stdin = None  # fed and closed by the caller: communicate() must not flush it
        out, err = process.communicate()
        self.check(process, err, doing)
        summary = None
        for line in out.decode("utf-8", "replace").splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("message_type") == "summary":
                summary = message
        if summary is None or not summary.get("snapshot_id"):
            raise InfraError(WHAT, f"{self.location}: {doing}: restic reported no snapshot")
        return Stored(
            snapshot=str(summary["snapshot_id"]),
            total_bytes=int(summary.get("total_bytes_processed") or 0),
            added_bytes=int(summary.get("data_added") or 0),
        )

    def dump(self, snapshot: str, filename: str) -> subprocess.Popen:
        """Start ``restic dump``: the stored stream on the process's stdout."""
        return self.popen(["dump", snapshot, filename])

    def snapshots(self, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        args = ["snapshots", "--json"]
        if tags:
            args += ["--tag", ",".join(f"{key}={value}" for key, value in tags.items())]
        return json.loads(self.run(args, "listing snapshots", timeout=300) or "[]") or []

    def forget(self, snapshots: Sequence[str]) -> None:
        """Forget snapshots (their data goes with the next prune). Needs the exclusive lock."""
        if snapshots:
            self.run(["forget", *snapshots], "forgetting snapshots", timeout=600)

    def prune(self) -> None:
        self.run(["prune"], "pruning", timeout=settings.WPFLEET_BACKUP_TIMEOUT_SECONDS)

    def unlock(self) -> None:
        """Remove stale locks only (of restic processes that died): a live one stays."""
        self.run(["unlock"], "removing stale locks", timeout=120)


def _cache_dir() -> Path:
    path = settings.VAR_DIR / "cache" / "restic"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _sftp_command(repository: str) -> str | None:
    """The ssh command restic runs for an SFTP repository: our key, our known_hosts, no prompts.

    Takes ``sftp:user@host:/path`` and ``sftp://user@host:port//path``.
    """
    if not repository.startswith("sftp:"):
        return None
    if repository.startswith("sftp://"):
        parts = urlsplit(repository)
        user, host, port = parts.username, parts.hostname, parts.port
    else:
        target = repository.removeprefix("sftp:").split(":", 1)[0]
        user, _, host = target.rpartition("@")
        port = None
    if not host:
        raise InfraError(WHAT, f"{repository!r} names no SFTP host")
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=30"]
    if settings.WPFLEET_BACKUP_SFTP_KEY_FILE:
        command += ["-i", settings.WPFLEET_BACKUP_SFTP_KEY_FILE, "-o", "IdentitiesOnly=yes"]
    if settings.WPFLEET_BACKUP_SFTP_KNOWN_HOSTS:
        command += [
            "-o",
            f"UserKnownHostsFile={settings.WPFLEET_BACKUP_SFTP_KNOWN_HOSTS}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
    if port:
        command += ["-p", str(port)]
    command += [f"{user}@{host}" if user else host, "-s", "sftp"]
    return shlex.join(command)
