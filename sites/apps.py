from django.apps import AppConfig


class SitesConfig(AppConfig):
    name = "sites"
    verbose_name = "Sites"

    def ready(self) -> None:
        # The admin's autodiscovery (django.contrib.admin's ready(), earlier
        # in INSTALLED_APPS) has registered every ModelAdmin by now.
        from django.contrib import admin

        from hosting import checks  # noqa: F401  (registers the deploy checks)
        from hosting.admin_security import harden

        harden(admin.site)

        # The job types and the periodic work of sites, for the generic runner.
        from jobs import registry
        from sites.ops.backups import schedule_backups
        from sites.ops.reconcile import reconcile_all
        from sites.provisioning import handlers

        handlers.register()
        registry.register_periodic("repaired", reconcile_all)
        registry.register_periodic("backups", schedule_backups)
        from sites.ops.usage import housekeeping_usage

        registry.register_periodic("usage", housekeeping_usage)
        # Last: WordPress cron runs within a time budget, after the quick work.
        from sites.ops.cron import run_due_crons

        registry.register_periodic("cron", run_due_crons)
