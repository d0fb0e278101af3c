"""Section 6: backups, restore and clone (issue #12), of a fresh site and of one with uploads.

Two cases, one site each: ``fresh`` (a new site, WordPress installed, nothing
added) and ``uploads`` (a new site plus ``Plan.backup_upload_bytes`` of
random, incompressible bytes in ``wp-content/uploads/bench/``, written by
``head -c N /dev/urandom`` run with docker exec as www-data in the site's PHP
container). For each case, one after another, each through the bench's API:

1. ``full_backup``: POST /api/sites/<name>/backups, the site's first backup;
2. ``second_backup``: the same again, nothing changed in between;
3. ``restore``: POST /api/sites/<name>/restore of the first backup into the
   same site. The job first takes a before-restore backup of the site, then
   stages the backup beside the live site, switches, reinstalls the login
   plugin, runs the live check (HTTPS through Caddy) and discards the old copy;
4. ``clone``: POST /api/sites/<name>/clone of the first backup into a new site:
   the new site's PROVISION job, its ``wordpress`` step restoring the backup
   instead of installing WordPress (containers, database, route and live
   check as any new site).

Each is timed as a user sees it: from just before its POST to its job's
``finished_at`` (the job DONE), the job run by the bench's worker cluster
(``manage.py run_worker``: the backups queue for backups and restores, the
default queue for the clone's provisioning), as every other section's jobs.
Each job's JobStep rows are kept (every attempt, both phases), with the
Backup rows it made (size_bytes: the files' tar plus the database dump as
restic read them; added_bytes: restic's ``data_added``, the new data after
deduplication and before compression) and, for a local repository, how
much the repository grew on disk. After the second backup, the parts of a
backup are timed alone (``probes``): one restic process's start, reading the
webroot through the archive API, dumping the database.

The bench's repository (config.BACKUP_REPOSITORY) is created empty at the
start of the run: the ``fresh`` case's first backup is the repository's first
WordPress (worst case for added bytes), the ``uploads`` case's shares
WordPress's files with the fresh site's snapshots.

Sites are named ``bb`` + random hex and carry the bench's owner; they are
deleted through the API at the end of their case (a live site's delete takes
a final backup first; recorded) and force-removed by the provisioner's undo
if that fails, as everywhere in the bench.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from bench import cleanup, measure
from bench.api import Call
from bench.sections import Context, timed
from bench.stats import critical_path, step_needs

# What the issue asks (#12).
TARGETS = {
    "full_backup_s": 5.0,  # a fresh site's first backup
    "second_backup_s": 2.0,  # an unchanged site's second backup
    "second_added_bytes": 1_000_000,  # ... adding less than 1 MB
    "restore_s": 10.0,
    "clone_s": 15.0,
}

RUNNER = (
    "API POST, job run by the bench's worker cluster (manage.py run_worker: queue 'backups' for "
    "backups and restores, 'default' for the clone's provisioning); timed from just before the POST "
    "to the job's finished_at (DONE)"
)
UPLOADS_DIR = "/var/www/html/wp-content/uploads/bench"
WEBROOT = "/var/www/html"
# Seconds an operation may take before the bench gives up on it (generous: 200 MB through restic).
OPERATION_TIMEOUT = 600.0
MB = 1_000_000
MIB = 1024 * 1024

# Runs as www-data in the site's PHP container: $1 files of $2 random bytes each; prints the bytes written.
_WRITE_UPLOADS = r"""
set -eu
dir=$3
mkdir -p "$dir"
i=0
while [ "$i" -lt "$1" ]; do
  head -c "$2" /dev/urandom > "$dir/random-$i.bin"
  i=$((i + 1))
done
du -sb "$dir" | cut -f1
"""


def new_name() -> str:
    """``bb`` + random hex: this section's sites, told apart from the others' ``b`` names at a glance."""
    return "bb" + secrets.token_hex(6)


# --- the site's content --------------------------------------------------------------------


def _du(docker, site: str, path: str) -> int | None:
    """Bytes under ``path`` in the site's PHP container (du -sb), None if it is not there."""
    code, output = docker.exec(f"php_{site}", ["sh", "-c", 'du -sb "$1" 2>/dev/null | cut -f1', "sh", path])
    try:
        return int(output.split()[-1]) if code == 0 and output else None
    except ValueError:
        return None


def write_uploads(docker, site: str, total: int, files: int) -> dict:
    each = total // files
    started = time.perf_counter()
    code, output = docker.exec(
        f"php_{site}",
        ["sh", "-c", _WRITE_UPLOADS, "sh", str(files), str(each), UPLOADS_DIR],
        user="www-data",
    )
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"writing the uploads into php_{site} failed ({code}): {output[-300:]}")
    return {
        "how": f"docker exec as www-data in php_{site}: head -c {each} /dev/urandom > {UPLOADS_DIR}/random-N.bin, "
        f"N = 0..{files - 1}",
        "files": files,
        "bytes_each": each,
        "bytes_on_disk": int(output.split()[-1]),
        "seconds": round(seconds, 3),
    }


# --- operations ----------------------------------------------------------------------------


def _job_id(body: object) -> int | None:
    """The job a 202 answer names: a job (backup, restore) or a site with its job (clone)."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("job"), dict):
        return body["job"].get("id")
    return body.get("id")


def _post(send: Callable[[], Call], timeout: float) -> tuple[Call, int]:
    """Send until the site is no longer busy (409: the previous job's release, the reconciler); (answer, 409s)."""
    deadline = time.monotonic() + timeout
    busy = 0
    while True:
        call = send()
        if call.status != 409 or time.monotonic() >= deadline:
            return call, busy
        busy += 1
        time.sleep(measure.POLL_SECONDS * 2)


def _seconds(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else round(later - earlier, 4)


def backups_of_job(job_id: int) -> list[dict]:
    """The Backup rows a job made (a backup job's, a restore's before-restore one, a delete's final one)."""
    from sites.models import Backup

    rows = []
    for b in Backup.objects.filter(job_id=job_id).order_by("id"):
        rows.append(
            {
                "key": b.key,
                "kind": b.kind,
                "status": b.status,
                "size_bytes": b.size_bytes,
                "added_bytes": b.added_bytes,
                "seconds": _seconds(b.finished_at.timestamp() if b.finished_at else None, b.created_at.timestamp()),
                "error": b.error[:300],
            }
        )
    return rows


def job_record(job_id: int, posted_at: float) -> dict:
    """What the job's rows say: status, timings from the POST, every step (every attempt, both phases)."""
    from jobs.models import Job, JobStep

    job = Job.objects.get(pk=job_id)
    created = job.created_at.timestamp()
    started = job.started_at.timestamp() if job.started_at else None
    finished = job.finished_at.timestamp() if job.finished_at else None
    done = job.status == Job.Status.DONE
    record: dict = {
        "job_id": job_id,
        "type": job.type,
        "status": job.status,
        "attempts": job.attempts,
        "error": job.error[:300],
        "post_to_done_s": _seconds(finished, posted_at) if done else None,
        # The POST until the job row exists; until a worker claimed it (the last attempt's start); claim to done.
        "accept_s": _seconds(created, posted_at),
        "queue_wait_s": _seconds(started, created),
        "wall_s": _seconds(finished, started),
    }
    steps = []
    for step in JobStep.objects.filter(job=job).order_by("id"):
        begin = step.started_at.timestamp()
        end = step.finished_at.timestamp() if step.finished_at else None
        steps.append(
            {
                "name": step.name,
                "phase": step.phase,
                "attempt": step.attempt,
                "outcome": step.outcome,
                "start_s": round(begin - posted_at, 4),
                "duration_s": _seconds(end, begin),
                "error": step.error[:300],
            }
        )
    record["steps"] = steps
    last = [s for s in steps if s["attempt"] == job.attempts and s["phase"] == "apply" and s["duration_s"] is not None]
    # Steps of a backup or a restore run one after another; a clone's overlap (see critical_path).
    record["steps_s"] = {s["name"]: s["duration_s"] for s in last}
    if not done and not record["error"]:
        record["error"] = measure.crashed_tasks([job_id]).get(job_id, "not finished within the timeout")
    return record


def repository_bytes() -> int | None:
    """Bytes of the repository on disk (a local one; None for a remote one)."""
    from django.conf import settings

    root = Path(settings.WPFLEET_BACKUP_REPOSITORY)
    if not root.is_absolute() or not root.is_dir():
        return None
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def operation(send: Callable[[], Call], timeout: float = OPERATION_TIMEOUT) -> dict:
    """POST, wait for the job to be final, and record it (with the repository's growth on disk)."""
    before = repository_bytes()
    call, busy = _post(send, timeout)
    job_id = _job_id(call.body) if call.status == 202 else None
    record: dict = {
        "post_status": call.status,
        "post_latency_s": round(call.latency_s, 4),
        "posted_at": round(call.started_at, 4),
        "busy_409s_before": busy,
    }
    if job_id is None:
        record.update(status="POST_FAILED", error=call.error or str(call.body)[:300])
        return record
    measure.wait_jobs([job_id], timeout)
    record.update(job_record(job_id, call.started_at))
    record["backups"] = backups_of_job(job_id)
    after = repository_bytes()
    record["repository_grew_bytes"] = None if before is None or after is None else after - before
    return record


def probes(site: str) -> dict:
    """The parts of a backup, each alone and one after another (a backup runs the files and the
    database side by side): what one restic process costs before it reads a byte (start, key
    derivation, the repository's config: ``restic cat config``), reading the webroot through the
    archive API, and mariadb-dump of the database; each read to the end and thrown away."""
    from sites.infra.restic import BackupRepository
    from sites.models.naming import SiteNames
    from sites.provisioning.steps import Infra

    infra = Infra()
    out: dict = {}

    def timed_probe(name: str, run: Callable[[], int | None]) -> None:
        started = time.perf_counter()
        try:
            nbytes = run()
            out[name] = {"seconds": round(time.perf_counter() - started, 3), "bytes": nbytes}
        except Exception as exc:  # a probe is context, never a reason to lose the case
            out[name] = {"error": f"{exc.__class__.__name__}: {exc}"[:300]}

    def restic_open() -> None:
        BackupRepository().ping()

    def archive() -> int:
        return sum(len(chunk) for chunk in infra.docker.archive(f"php_{site}", WEBROOT))

    def dump() -> int:
        process = infra.db.dump_process(SiteNames(site).database)
        assert process.stdout is not None
        total = 0
        while chunk := process.stdout.read(1 << 20):
            total += len(chunk)
        infra.db.finish(process, "dumping the database")
        return total

    timed_probe("restic_open", restic_open)
    timed_probe("files_archive_read", archive)
    timed_probe("database_dump", dump)
    return out


def _add_critical_path(record: dict) -> None:
    """A provisioning job's (the clone's) steps overlap: the chain that decided when it ended."""
    spans = {}
    for s in record.get("steps", []):
        if s["attempt"] == record.get("attempts") and s["phase"] == "apply" and s["duration_s"] is not None:
            begin = record["posted_at"] + s["start_s"]
            spans[s["name"]] = (begin, begin + s["duration_s"])
    path = critical_path(spans, step_needs())
    record["critical_path"] = path
    record["critical_path_s"] = round(sum(spans[n][1] - spans[n][0] for n in path), 4)


def _wait_backups_queue(timeout: float = 600.0) -> dict:
    """Wait until no job of the backups queue is open (the panel backup and the repository's maintenance
    that a fresh control database's housekeeping opens, a final backup of an earlier delete)."""
    from jobs.models import Job
    from sites.ops.backups import BACKUP_QUEUE_TYPES

    started = time.monotonic()
    seen: set[str] = set()
    while True:
        open_jobs = list(
            Job.objects.filter(type__in=BACKUP_QUEUE_TYPES, status__in=Job.OPEN).values_list("type", "subject_name")
        )
        seen.update(f"{kind} {subject}" for kind, subject in open_jobs)
        if not open_jobs:
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the backups queue is still busy after {timeout:g}s: {open_jobs}")
        time.sleep(measure.POLL_SECONDS * 5)
    return {"waited_s": round(time.monotonic() - started, 3), "jobs": sorted(seen)}


def _require_done(what: str, record: dict) -> None:
    if record.get("status") != "DONE":
        raise RuntimeError(f"{what}: {record.get('status')}: {record.get('error')}")


def _final_backups(names: list[str]) -> dict:
    """The deletes' final backups (a DEPROVISION job's ``final_backup`` step), per site."""
    from jobs.models import Job, JobStep
    from sites.models import Site

    out = {}
    for job in Job.objects.filter(subject_name__in=names, type=Site.JobType.DEPROVISION):
        step = JobStep.objects.filter(job=job, name="final_backup", finished_at__isnull=False).order_by("-id").first()
        rows = backups_of_job(job.pk)
        out[job.subject_name] = {
            "final_backup_step_s": step.duration.total_seconds() if step and step.duration else None,
            "backups": rows,
        }
    return out


# --- a case ----------------------------------------------------------------------------------


def run_case(ctx: Context, label: str, upload_bytes: int, upload_files: int) -> dict:
    from sites.provisioning.steps import Infra

    docker = Infra().docker
    api = ctx.api
    site = new_name()
    case: dict = {"case": label, "site": site, "upload_bytes": upload_bytes}
    created: list[str] = [site]
    cleanup.REGISTRY.add(site)
    try:
        posted = measure.post_one(api, site)
        if posted.job_id is not None:
            measure.wait_jobs([posted.job_id], ctx.plan.batch_timeout(1))
        case["provision"] = measure.sample(posted, step_needs())
        _require_done("creating the site", case["provision"])
        if upload_bytes:
            case["uploads"] = write_uploads(docker, site, upload_bytes, upload_files)
        case["webroot_bytes"] = _du(docker, site, WEBROOT)
        case["uploads_bytes_before"] = _du(docker, site, UPLOADS_DIR)
        case["backups_queue_before"] = _wait_backups_queue()

        case["full_backup"] = operation(lambda: api.back_up_site(site))
        _require_done("full backup", case["full_backup"])
        first = case["full_backup"]["backups"][0]["key"]
        case["second_backup"] = operation(lambda: api.back_up_site(site))
        _require_done("second backup", case["second_backup"])
        case["probes"] = probes(site)
        case["restore"] = operation(lambda: api.restore_site(site, first))
        _require_done("restore", case["restore"])
        case["uploads_bytes_after_restore"] = _du(docker, site, UPLOADS_DIR)

        clone = new_name()
        created.append(clone)
        cleanup.REGISTRY.add(clone)
        case["clone_site"] = clone
        case["clone"] = operation(lambda: api.clone_site(site, clone, first))
        if case["clone"].get("status") == "DONE":
            _add_critical_path(case["clone"])
        _require_done("clone", case["clone"])
        case["uploads_bytes_in_clone"] = _du(docker, clone, UPLOADS_DIR)
    except Exception as exc:
        case["error"] = f"{exc.__class__.__name__}: {exc}"
    finally:
        case["delete"] = measure.delete_sites(api, created, OPERATION_TIMEOUT)
        case["delete"]["final_backups"] = _final_backups(created)
    case["targets"] = judge(case)
    _print_case(case)
    return case


# --- targets -----------------------------------------------------------------------------


def first_backup(case: dict, op: str) -> dict:
    """The Backup row an operation's job made first (a restore's: its before-restore backup); {} if none."""
    rows: list[dict] = case.get(op, {}).get("backups") or []
    return rows[0] if rows else {}


def _row(what: str, measured: float | None, target: str, ok: bool | None, note: str = "") -> dict:
    return {"what": what, "measured": measured, "target": target, "pass": ok, "note": note}


def judge(case: dict) -> list[dict]:
    """Each figure of the case beside the issue's target: True (pass), False (miss), None (no target or no figure)."""

    def seconds(op: str) -> float | None:
        return case.get(op, {}).get("post_to_done_s")

    def within(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    fresh = case["case"] == "fresh"
    full = seconds("full_backup")
    added = first_backup(case, "second_backup").get("added_bytes")
    return [
        _row(
            "full backup",
            full,
            f"≤ {TARGETS['full_backup_s']:g} s",
            within(full, TARGETS["full_backup_s"]) if fresh else None,
            "" if fresh else "no target: the issue's 5 s is for a fresh site",
        ),
        _row(
            "second backup, site unchanged",
            seconds("second_backup"),
            f"≤ {TARGETS['second_backup_s']:g} s",
            within(seconds("second_backup"), TARGETS["second_backup_s"]),
        ),
        _row(
            "second backup, added bytes",
            added,
            f"< {TARGETS['second_added_bytes'] / MB:g} MB",
            None if added is None else added < TARGETS["second_added_bytes"],
        ),
        _row(
            "restore of the first backup",
            seconds("restore"),
            f"≤ {TARGETS['restore_s']:g} s",
            within(seconds("restore"), TARGETS["restore_s"]),
        ),
        _row(
            "clone into a new site (POST→ACTIVE)",
            seconds("clone"),
            f"≤ {TARGETS['clone_s']:g} s",
            within(seconds("clone"), TARGETS["clone_s"]),
        ),
    ]


def verdict(ok: bool | None) -> str:
    return {True: "pass", False: "MISS", None: "n/a"}[ok]


def describe(row: dict) -> str:
    value = row["measured"]
    if value is None:
        return "–"
    return f"{value / MB:.3f} MB" if "bytes" in row["what"] else f"{value:.2f} s"


def _mb(value: int | None) -> str:
    return "–" if value is None else f"{value / MB:.1f} MB"


def _print_case(case: dict) -> None:
    full = first_backup(case, "full_backup")
    print(
        f"  backups {case['case']} ({case['site']}, uploads {_mb(case['upload_bytes'])}): "
        f"backup size {_mb(full.get('size_bytes'))}, added {_mb(full.get('added_bytes'))}",
        flush=True,
    )
    for row in case["targets"]:
        note = f"  ({row['note']})" if row["note"] else ""
        print(
            f"    {verdict(row['pass']):<4}  {row['what']}: {describe(row)} (target {row['target']}){note}", flush=True
        )
    for op in ("full_backup", "second_backup", "restore", "clone"):
        steps = case.get(op, {}).get("steps_s")
        if steps:
            print(f"          {op} steps: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()) + " s", flush=True)
    if case.get("error"):
        print(f"    ERROR: {case['error']}", flush=True)


@timed
def run(ctx: Context) -> dict:
    from django.conf import settings

    if not settings.WPFLEET_BACKUP_REPOSITORY:
        raise RuntimeError("no backup repository is configured (WPFLEET_BACKUP_REPOSITORY): run lab/up.sh")
    plan = ctx.plan
    ctx.panel.ensure_cluster(plan.workers)
    print(f"  backups: {RUNNER}", flush=True)
    cases = [
        run_case(ctx, "fresh", 0, plan.backup_upload_files),
        run_case(ctx, "uploads", plan.backup_upload_bytes, plan.backup_upload_files),
    ]
    failed = [f"{case['case']}: {case['error']}" for case in cases if case.get("error")]
    return {
        **({"error": "; ".join(failed)} if failed else {}),
        "runner": RUNNER,
        "repository": settings.WPFLEET_BACKUP_REPOSITORY,
        "backup_workers": settings.WPFLEET_BACKUP_WORKERS,
        "targets_from_issue": TARGETS,
        "cases": cases,
    }
