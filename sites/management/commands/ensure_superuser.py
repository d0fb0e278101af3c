from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the operators' superuser from WPFLEET_ADMIN_USER / WPFLEET_ADMIN_PASSWORD if it does not exist."

    def handle(self, *args, **options):
        username = settings.WPFLEET_ADMIN_USER
        password = settings.WPFLEET_ADMIN_PASSWORD
        if not password:
            raise CommandError("WPFLEET_ADMIN_PASSWORD is not set (make up writes it to .env)")
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"superuser {username} exists")
            return
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"superuser {username} created")
