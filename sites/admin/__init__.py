"""The operators' console: sites and their jobs (both registered here, since
jobs' records are shown and retried through sites' services)."""

from sites.admin import jobs, sites  # noqa: F401  (registers the ModelAdmins)
