from django.core.management.base import BaseCommand

from sites.ops.reconcile import reconcile_all


class Command(BaseCommand):
    help = "Compare every ACTIVE site with what should exist, repair what is missing or stopped, and print the drift."

    def handle(self, *args, **options):
        repaired = reconcile_all()
        for name, drift in repaired.items():
            self.stdout.write(f"{name}: repaired {'; '.join(drift)}")
        self.stdout.write(f"{len(repaired)} site(s) repaired")
