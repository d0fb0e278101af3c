import multiprocessing
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django_q.models import Schedule

from jobs.housekeeping import housekeeping


class Command(BaseCommand):
    help = (
        "Recover jobs of dead workers, make sure housekeeping runs every minute, then run the django-q2 "
        "clusters: the main one here, each other queue's (jobs.queue) as a child process."
    )

    def handle(self, *args, **options):
        Schedule.objects.update_or_create(
            name="wpfleet-housekeeping",
            defaults={
                "func": "jobs.housekeeping.housekeeping",
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
                # Only the main cluster runs schedules (django-q2 gives a
                # schedule without a cluster to the default one).
                "cluster": None,
            },
        )
        self.stdout.write(f"housekeeping at start: {housekeeping()}")
        self.stdout.flush()
        # django-q2 reads its configuration once per process (Q_CLUSTER_NAME
        # picks an ALT_CLUSTERS entry): every other cluster is a process of
        # its own, in this process group, so that a kill of the group (a
        # crash) takes them all, and stopped when this one stops.
        others: dict[str, object] = dict(settings.Q_CLUSTER.get("ALT_CLUSTERS") or {})  # type: ignore[call-overload]

        def start(name: str) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=settings.BASE_DIR,
                env={**os.environ, "Q_CLUSTER_NAME": name},
            )

        clusters = {name: start(name) for name in others}
        children = list(clusters.values())
        try:
            # Returns once the cluster runs: its sentinel is a child process,
            # which a SIGTERM here stops (django-q2's handler); then the others go.
            call_command("qcluster")
            while any(process.is_alive() for process in multiprocessing.active_children()):
                time.sleep(0.5)
                for name, child in list(clusters.items()):
                    if child.poll() is not None:
                        # Its queue would wait forever, holding its sites' jobs open.
                        self.stderr.write(f"cluster {name} exited with {child.returncode}: starting it again")
                        clusters[name] = start(name)
                        children.append(clusters[name])
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
