import json
import time

from django.core.management.base import BaseCommand

from sites.models import Site
from sites.ops.reconcile import reconcile_all


class Command(BaseCommand):
    help = "Compare every ACTIVE site with what should exist, repair what is missing or stopped, and print the drift."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON line: sites checked, repairs, the pass's wall time and this process's CPU time",
        )

    def handle(self, *args, **options):
        checked = Site.objects.filter(status=Site.Status.ACTIVE, current_job__isnull=True).count()
        # CPU time of this process only: the pass's own work (listings parsed,
        # comparisons, repairs' client side), not the engine's or MariaDB's.
        cpu, wall = time.process_time(), time.perf_counter()
        repaired = reconcile_all()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if options["json"]:
            report = {"sites": checked, "repaired": repaired, "wall_seconds": wall, "cpu_seconds": cpu}
            self.stdout.write(json.dumps(report))
            return
        for name, drift in repaired.items():
            self.stdout.write(f"{name}: repaired {'; '.join(drift)}")
        self.stdout.write(f"{len(repaired)} site(s) repaired")
