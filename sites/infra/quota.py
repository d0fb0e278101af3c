"""Per-site disk quotas: one btrfs subvolume per site, limited by btrfs simple quotas.

The quota filesystem (lab/up.sh makes it: a sparse image on a loop device in
the lab, a partition in production) is a btrfs filesystem whose top level is
mounted at ``root``, with simple quotas ("squota", Linux 6.7 and later)
enabled. Each site gets:

* ``<root>/<site>``: a subvolume, root-owned, mode 0755 (the PHP image's
  entrypoint, or Docker's seeding from the image, hands it to www-data). A
  Docker ``local`` volume binds it (``driver_opts``), so the site's
  containers see it at /var/www/html as before.
* qgroup ``1/<id>``, ``<id>`` being the subvolume's id (btrfs hands out ids,
  no two live subvolumes share one): the site's limit. The subvolume's own
  qgroup ``0/<id>`` is its member. Under simple quotas a subvolume or
  snapshot that the site creates inside its directory (an unprivileged
  ioctl, reachable from PHP through any binary it drops) joins the same
  ``1/<id>`` by itself, and a snapshot's shared data stays charged to the
  site: the limit holds. (Under btrfs's full qgroups a nested subvolume has
  its own, unlimited qgroup: the site could write past its limit. Hence
  simple quotas, and ``ensure`` refuses a filesystem in that mode.)
* ``<root>/.wpfleet-quota/<site>``: the record that the directory is ours
  (``owner=`` as the Docker labels say it) and which subvolume id it has. It
  is written before the subvolume is created and removed last, so a crash
  anywhere in between is finished by running ``ensure`` or ``remove``
  again. It lives outside the site's directory, out of the site's reach.

Usage counts data and metadata (100,000 empty files cost ~36 MB): there is
no separate inode limit, none is needed. Numbers are as of the last
transaction commit (btrfs commits every 30 s); ``sync=True`` commits first.

Commands run with subprocess on the Docker host (the worker runs as root
there); no secret is ever an argument.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from sites.infra.errors import ForeignResource, InfraError

WHAT = "disk quota"
RECORDS_DIR = ".wpfleet-quota"
TEMPLATES_DIR = ".wpfleet-templates"
_TEMPLATE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TOP_LEVEL = 5  # the id of a btrfs filesystem's top-level subvolume
_SITE = re.compile(r"[a-z0-9]{1,32}")  # sites.models.validation: these names never begin with "."
_QGROUP_LINE = re.compile(r"^(\d+)/(\d+)\s+(\d+)\s+(\d+)\s+(\d+|none)\b")
_BTRFS_IOC_FS_INFO = 0x8400941F  # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args): 1024 bytes

# What btrfs says, and what to tell people; all of these need an operator.
_PERMANENT = (
    ("not a btrfs filesystem", "the quota root is not on a btrfs filesystem (is it mounted?)"),
    ("quotas not enabled", "quotas are not enabled on the quota filesystem (lab/up.sh enables them)"),
    ("read-only file system", "the quota filesystem is read-only (btrfs turns read-only after an error)"),
)


class QuotaBelowUsage(InfraError, ValueError):
    """A limit below what the site already uses: refused, since it would stop every write at once."""

    permanent = True

    def __init__(self, site: str, limit_bytes: int, used_bytes: int) -> None:
        super().__init__(WHAT, f"{site}: a limit of {limit_bytes} bytes is below its usage of {used_bytes} bytes")
        self.site = site
        self.limit_bytes = limit_bytes
        self.used_bytes = used_bytes


def _permanent(message: str) -> InfraError:
    error = InfraError(WHAT, message)
    error.permanent = True
    return error


@dataclass(frozen=True)
class Record:
    owner: str
    subvolume: int | None  # None: written, the subvolume not created yet


@dataclass(frozen=True)
class Qgroup:
    used: int
    limit: int  # 0: none


class DiskQuotas:
    """The quota filesystem mounted at ``root`` (settings.WPFLEET_QUOTA_ROOT)."""

    def __init__(self, root: str, owner: str | None = None, *, btrfs: str = "btrfs", timeout: float = 120) -> None:
        if not root or not os.path.isabs(root):
            raise _permanent(f"the quota root must be an absolute path, not {root!r}")
        self.root = os.path.normpath(root)
        self.owner = owner if owner is not None else settings.WPFLEET_OWNER
        if not self.owner or any(c in self.owner for c in "\n="):
            raise _permanent(f"owner {self.owner!r} cannot be recorded")
        self.records = os.path.join(self.root, RECORDS_DIR)
        self.btrfs = btrfs
        self.timeout = timeout
        self._checked = False

    # --- the interface ---------------------------------------------------------

    def path(self, site: str) -> str:
        return os.path.join(self.root, _site(site))

    def check(self) -> None:
        """Raise unless the root is the quota filesystem, mounted: before anything takes a missing directory for a removed site."""
        self._check_root()

    def driver_opts(self, site: str) -> dict[str, str]:
        """For ``docker volume create --driver local``: bind the site's directory."""
        return {"type": "none", "o": "bind", "device": self.path(site)}

    def ensure(self, site: str, limit_bytes: int, template: str | None = None) -> str:
        """Make the site's directory and set its limit (idempotent); returns the directory to bind.

        ``template``: a template's path (``template``): the new directory
        is a snapshot of it, made at once whatever its size (copy on write;
        the template's data stays charged to the template, so the site's
        usage counts what it writes). The limit is set as given, even below
        current usage: this restores the recorded desired state (a
        reconciler); ``set_limit`` is the checked way to change it.
        """
        path, limit = self.path(site), _limit(limit_bytes)
        self._check_root()
        os.makedirs(self.records, mode=0o700, exist_ok=True)
        record = self._record(site)
        if record is None:
            if os.path.lexists(path):
                raise ForeignResource(WHAT, f"{path} exists and is not wpfleet's; it was left untouched")
            record = Record(self.owner, None)
            self._write_record(site, record)
        elif record.owner != self.owner:
            raise ForeignResource(WHAT, f"{path} belongs to owner {record.owner}; it was left untouched")
        if not os.path.lexists(path):
            if template is not None:
                self._run("subvolume", "snapshot", template, path)
            else:
                self._run("subvolume", "create", path, ok=("File exists",))
            os.chown(path, 0, 0)
            os.chmod(path, 0o755)
        subvolume = self._subvolume_id(path)
        if record.subvolume != subvolume:
            if record.subvolume is not None:  # recreated behind our back: its old qgroup is stale
                self._run("qgroup", "destroy", f"1/{record.subvolume}", self.root, ok=_GONE_OR_BUSY)
            self._write_record(site, Record(self.owner, subvolume))
        self._run("qgroup", "create", f"1/{subvolume}", self.root, ok=("File exists",))
        self._run("qgroup", "assign", "--no-rescan", f"0/{subvolume}", f"1/{subvolume}", self.root, ok=("File exists",))
        self._run("qgroup", "limit", str(limit), f"1/{subvolume}", self.root)
        return path

    def template(self, key: str, fill: Callable[[str], None]) -> str:
        """The template ``key`` (made once by ``fill(directory)``, then kept): a subvolume new sites are snapshots of.

        Templates live in ``<root>/.wpfleet-templates/`` (no site name
        begins with a dot). A template is filled under a name of its own,
        then renamed into place: a crash or a concurrent maker never leaves
        a half-filled one where a site would be made from it.
        """
        if not _TEMPLATE.fullmatch(key):
            raise _permanent(f"template key {key!r} is not [a-z0-9-]")
        self._check_root()
        directory = os.path.join(self.root, TEMPLATES_DIR)
        path = os.path.join(directory, key)
        if os.path.isdir(path):
            return path
        os.makedirs(directory, mode=0o700, exist_ok=True)
        staging = os.path.join(directory, f".{key}.{os.getpid()}.{threading.get_ident()}")
        if os.path.lexists(staging):
            self._run("subvolume", "delete", staging, ok=_GONE_OR_BUSY)
        self._run("subvolume", "create", staging)
        try:
            os.chmod(staging, 0o755)
            fill(staging)
            os.rename(staging, path)
        except OSError:
            if not os.path.isdir(path):  # lost no race: a real failure
                self._run("subvolume", "delete", staging, ok=_GONE_OR_BUSY)
                raise
            self._run("subvolume", "delete", staging, ok=_GONE_OR_BUSY)  # another maker won
        except BaseException:
            self._run("subvolume", "delete", staging, ok=_GONE_OR_BUSY)
            raise
        return path

    def set_limit(self, site: str, limit_bytes: int) -> None:
        """Grow or shrink the limit; refuses (``QuotaBelowUsage``, permanent) one below current usage."""
        limit = _limit(limit_bytes)
        subvolume = self._ours(site)
        used = self._qgroup_of(site, subvolume, sync=True).used
        if limit < used:
            raise QuotaBelowUsage(site, limit, used)
        self._run("qgroup", "limit", str(limit), f"1/{subvolume}", self.root)

    def usage(self, site: str, *, sync: bool = False) -> tuple[int, int]:
        """(bytes used, limit in bytes; 0 when none) of one site."""
        qgroup = self._qgroup_of(site, self._ours(site), sync=sync)
        return qgroup.used, qgroup.limit

    def usage_all(self, *, sync: bool = False) -> dict[str, tuple[int, int]]:
        """{site: (bytes used, limit)} for every site of this owner: one ``btrfs qgroup show`` for all."""
        qgroups = self._qgroups(sync=sync)
        found: dict[str, tuple[int, int]] = {}
        for site, record in self._records().items():
            if record.owner != self.owner or record.subvolume is None:
                continue
            qgroup = qgroups.get((1, record.subvolume))
            if qgroup is not None:
                found[site] = (qgroup.used, qgroup.limit)
        return found

    def owned(self, site: str) -> bool | None:
        """True if the site's directory is ours, False if something else holds the name, None if absent."""
        self._check_root()
        record = self._record(site)
        if record is not None:
            return record.owner == self.owner
        return False if os.path.lexists(self.path(site)) else None

    def remove(self, site: str) -> str | None:
        """Delete the site's directory (and any subvolume the site made in it) and its qgroup, if ours.

        Returns a note when something was left alone. Remove the Docker
        volume that binds the directory first.
        """
        path = self.path(site)
        self._check_root()  # an unmounted filesystem must not look like a removed site
        record = self._record(site)
        if record is None:
            return f"{path} is not wpfleet's: left untouched" if os.path.lexists(path) else None
        if record.owner != self.owner:
            return f"{path} belongs to owner {record.owner}: left untouched"
        subvolume = record.subvolume
        if os.path.lexists(path):
            current = self._subvolume_id(path, must_be_subvolume=False)
            if current == TOP_LEVEL or (subvolume is not None and current != subvolume):
                return f"{path} is not the subvolume wpfleet made: left untouched"
            subvolume = current
            # Deleting a subvolume reserves metadata in its qgroup: at the limit it fails (EDQUOT).
            self._run("qgroup", "limit", "none", f"1/{subvolume}", self.root, ok=_GONE_OR_BUSY)
            nested = self._subvolumes_under(site)
            # deepest first: btrfs refuses to delete a subvolume that holds another
            doomed = sorted(nested, key=lambda item: item[1].count("/"), reverse=True)
            self._run(
                "subvolume", "delete", "--commit-after",
                *[os.path.join(self.root, relative) for _, relative in doomed], path,
            )  # fmt: skip
            # The qgroup can go once the cleaner has dropped the subvolumes' trees.
            self._run("subvolume", "sync", self.root, *[str(i) for i, _ in doomed], str(subvolume))
        note = None
        if subvolume is not None and not self._destroy_qgroup(subvolume):
            note = f"qgroup 1/{subvolume} of {site} still busy: left for purge_stale (it limits nothing now)"
        os.unlink(self._record_path(site))
        return note

    def purge_stale(self) -> list[str]:
        """Destroy the site qgroups (1/<id>) that no record names and no subvolume is in; returns them.

        Left by a ``remove`` whose qgroup was still busy. Never races with
        ``ensure``: it records an id before it makes that id's qgroup.
        """
        self._check_root()
        named = {record.subvolume for record in self._records().values()}
        qgroups = self._qgroups()
        stale = [ident for level, ident in qgroups if level == 1 and ident not in named and (0, ident) not in qgroups]
        return [f"1/{ident}" for ident in stale if self._destroy_qgroup(ident, attempts=1)]

    # --- records -----------------------------------------------------------------

    def _record_path(self, site: str) -> str:
        return os.path.join(self.records, _site(site))

    def _record(self, site: str) -> Record | None:
        try:
            with open(self._record_path(site), encoding="utf-8") as f:
                return _parse_record(f.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InfraError(WHAT, f"cannot read the record of {site}: {exc}") from exc

    def _records(self) -> dict[str, Record]:
        found: dict[str, Record] = {}
        try:
            entries = list(os.scandir(self.records))
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise InfraError(WHAT, f"cannot list {self.records}: {exc}") from exc
        for entry in entries:
            if not _SITE.fullmatch(entry.name):
                continue  # a temporary file being written
            try:
                with open(entry.path, encoding="utf-8") as f:
                    found[entry.name] = _parse_record(f.read())
            except FileNotFoundError:
                continue  # removed meanwhile
            except OSError as exc:
                raise InfraError(WHAT, f"cannot read {entry.path}: {exc}") from exc
        return found

    def _write_record(self, site: str, record: Record) -> None:
        final = self._record_path(site)
        temporary = f"{final}.{os.getpid()}.tmp"
        text = f"owner={record.owner}\nsubvolume={'' if record.subvolume is None else record.subvolume}\n"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            raise InfraError(WHAT, f"cannot write the record of {site}: {exc}") from exc

    def _ours(self, site: str) -> int:
        record = self._record(site)
        if record is None or record.subvolume is None:
            raise _permanent(f"{site} has no quota directory (ensure it first)")
        if record.owner != self.owner:
            raise ForeignResource(WHAT, f"{self.path(site)} belongs to owner {record.owner}")
        return record.subvolume

    # --- btrfs -------------------------------------------------------------------

    def _run(self, *args: str, ok: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        argv = [self.btrfs, *args]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError as exc:
            raise _permanent(f"{self.btrfs} not found (package btrfs-progs)") from exc
        except subprocess.TimeoutExpired as exc:
            raise InfraError(WHAT, f"{' '.join(args[:2])} took more than {self.timeout:g}s") from exc
        except OSError as exc:
            raise InfraError(WHAT, f"cannot run {self.btrfs}: {exc}") from exc
        if result.returncode != 0 and not any(needle in result.stderr for needle in ok):
            raise _error(args, result)
        return result

    def _check_root(self) -> None:
        """Once per instance: the root is a btrfs top level, mounted, with simple quotas."""
        if self._checked:
            return
        if not os.path.isdir(self.root):
            raise _permanent(f"{self.root} does not exist (is the quota filesystem mounted?)")
        if self._subvolume_id(self.root, must_be_subvolume=False) != TOP_LEVEL:
            raise _permanent(f"{self.root} is not the top level of a btrfs filesystem")
        mode = _quota_mode(self.root)
        if mode != "squota":
            raise _permanent(
                f"{self.root}: quota mode is {mode or 'disabled'}, not squota (simple quotas; lab/up.sh enables them)"
            )
        self._checked = True

    def _subvolume_id(self, path: str, *, must_be_subvolume: bool = True) -> int:
        if os.path.islink(path):
            raise ForeignResource(WHAT, f"{path} is a symbolic link; it was left untouched")
        text = self._run("inspect-internal", "rootid", path).stdout.strip()
        if not text.isdigit():
            raise InfraError(WHAT, f"btrfs rootid of {path} printed {text[:80]!r}")
        subvolume = int(text)
        if must_be_subvolume and subvolume == TOP_LEVEL:
            raise ForeignResource(WHAT, f"{path} is a plain directory, not a subvolume wpfleet made; left untouched")
        return subvolume

    def _qgroups(self, *, sync: bool = False, path: str | None = None) -> dict[tuple[int, int], Qgroup]:
        args = ["qgroup", "show", "--raw", "-r"]
        if sync:
            args.append("--sync")
        if path is not None:
            args.append("-F")  # only the qgroups that limit the path: 0/<id> and 1/<id>
        result = self._run(*args, path or self.root)
        found: dict[tuple[int, int], Qgroup] = {}
        for line in result.stdout.splitlines():
            m = _QGROUP_LINE.match(line)
            if m:
                level, ident, used, _exclusive, limit = m.groups()
                found[(int(level), int(ident))] = Qgroup(int(used), 0 if limit == "none" else int(limit))
        return found

    def _qgroup_of(self, site: str, subvolume: int, *, sync: bool) -> Qgroup:
        qgroup = self._qgroups(sync=sync, path=self.path(site)).get((1, subvolume))
        if qgroup is None:
            raise InfraError(WHAT, f"{site} has no qgroup 1/{subvolume} (ensure it again)")
        return qgroup

    def _destroy_qgroup(self, subvolume: int, attempts: int = 10) -> bool:
        """Destroy qgroup 1/<id>; False if it stays busy (its usage is released by a later commit)."""
        for attempt in range(attempts):
            result = self._run("qgroup", "destroy", f"1/{subvolume}", self.root, ok=_GONE_OR_BUSY)
            if "busy" not in result.stderr.lower():
                return True
            if attempt + 1 < attempts:
                self._run("filesystem", "sync", self.root)
                time.sleep(0.1 * (attempt + 1))
        return False

    def _subvolumes_under(self, site: str) -> list[tuple[int, str]]:
        """(id, path relative to the root) of the subvolumes inside the site's directory."""
        found = []
        prefix = _site(site) + "/"
        for line in self._run("subvolume", "list", self.root).stdout.splitlines():
            # "ID 263 gen 55 top level 262 path esc/nested"
            head, sep, relative = line.partition(" path ")
            fields = head.split()
            if sep and len(fields) >= 2 and fields[1].isdigit() and relative.startswith(prefix):
                found.append((int(fields[1]), relative))
        return found


_GONE_OR_BUSY = ("No such file or directory", "Device or resource busy")


def _site(site: str) -> str:
    if not isinstance(site, str) or not _SITE.fullmatch(site):
        raise _permanent(f"{site!r} is not a site name")
    return site


def _limit(limit_bytes: int) -> int:
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes <= 0:
        raise _permanent(f"a limit must be a positive number of bytes, not {limit_bytes!r}")
    return limit_bytes


def _parse_record(text: str) -> Record:
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    subvolume = fields.get("subvolume", "")
    return Record(fields.get("owner", ""), int(subvolume) if subvolume.isdigit() else None)


def _error(args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> InfraError:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    text = lines[-1][:300] if lines else f"exited with {result.returncode}"
    lower = text.lower()
    for needle, message in _PERMANENT:
        if needle in lower:
            return _permanent(f"btrfs {' '.join(args[:2])}: {message}")
    return InfraError(WHAT, f"btrfs {' '.join(args[:2])}: {text}")


def _quota_mode(root: str) -> str:
    """The quota mode from sysfs (squota, qgroup, or empty: disabled), found by the filesystem's id."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            info = fcntl.ioctl(fd, _BTRFS_IOC_FS_INFO, bytes(1024))
        finally:
            os.close(fd)
    except OSError as exc:
        raise _permanent(f"{root} is not on a btrfs filesystem ({exc.strerror})") from exc
    fsid = info[16:32].hex()
    uuid = f"{fsid[:8]}-{fsid[8:12]}-{fsid[12:16]}-{fsid[16:20]}-{fsid[20:]}"
    qgroups = f"/sys/fs/btrfs/{uuid}/qgroups"
    try:
        with open(f"{qgroups}/mode", encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        # no qgroups directory: quotas are off; no mode file: a kernel before simple quotas (6.7)
        return "qgroup" if os.path.isdir(qgroups) else ""


__all__ = ["DiskQuotas", "QuotaBelowUsage", "WHAT"]
