"""The operators' console: sites, their jobs and their backups (all registered
here, since jobs' records are shown and retried through sites' services)."""

from sites.admin import backups, jobs, sites  # noqa: F401  (registers the ModelAdmins)
