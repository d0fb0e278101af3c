from django.core.management.base import BaseCommand, CommandError

from sites.ops.cleanup import cleanup


class Command(BaseCommand):
    help = "Remove zombie sites (final failed job) and resources that belong to no site, then print what was done."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only print what would be removed")

    def handle(self, *args, dry_run: bool = False, **options):
        report = cleanup(dry_run=dry_run)
        for line in report.actions:
            self.stdout.write(line)
        self.stdout.write(
            f"{'dry run: ' if dry_run else ''}{report.zombies} zombie site(s), {report.orphans} orphaned site(s)"
        )
        if report.errors:
            for line in report.errors:
                self.stderr.write(f"error: {line}")
            raise CommandError(f"{len(report.errors)} cleanup(s) failed")
