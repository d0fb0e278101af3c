from django.core.management import call_command
from django.core.management.base import BaseCommand
from django_q.models import Schedule

from jobs.housekeeping import housekeeping


class Command(BaseCommand):
    help = "Recover jobs of dead workers, make sure housekeeping runs every minute, then run the django-q2 cluster."

    def handle(self, *args, **options):
        Schedule.objects.update_or_create(
            name="wpfleet-housekeeping",
            defaults={
                "func": "jobs.housekeeping.housekeeping",
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
            },
        )
        self.stdout.write(f"housekeeping at start: {housekeeping()}")
        self.stdout.flush()
        call_command("qcluster")
