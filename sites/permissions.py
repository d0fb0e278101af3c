"""Who may do what: one rule set for the API and the admin.

Every operation on sites and jobs, from either door, names one entry of
``OPERATIONS``; each entry is a Django model permission, so the rights an
operator has are the ones the admin's user and group pages show. A new
endpoint or admin action adds its operation here, and is refused until it
does (``ApiPermission`` denies a method its view does not map).
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

# operation -> the model permission it needs
OPERATIONS: dict[str, str] = {
    "list_sites": "sites.view_site",
    "view_site": "sites.view_site",
    "create_site": "sites.add_site",
    # Retrying a failed job changes the site (a new job holds it).
    "retry_site": "sites.change_site",
    "delete_site": "sites.delete_site",
    # Inside the site's WordPress, as its administrator: changes the site.
    "new_admin_password": "sites.change_site",
    "login_link": "sites.change_site",
    "change_domains": "sites.change_site",
    # How the site is served (its page cache), and emptying that cache.
    "change_settings": "sites.change_site",
    "purge_cache": "sites.change_site",
    # Day-two operations: stopping and starting the site, its cron, its logs.
    "suspend_site": "sites.change_site",
    "resume_site": "sites.change_site",
    "clear_cron_flag": "sites.change_site",
    # Logs show visitors' addresses and paths: as much as the site's page does.
    "view_logs": "sites.view_site",
    # Backups are the site's data: seeing them is viewing the site; taking
    # one or restoring one changes it; a clone is a new site.
    "list_backups": "sites.view_site",
    "back_up_site": "sites.change_site",
    "restore_site": "sites.change_site",
    "clone_site": "sites.add_site",
    # Cleanup removes zombie sites and their leftovers: a deletion.
    "cleanup_sites": "sites.delete_site",
    "view_job": "jobs.view_job",
    # Which dependency failed and why (hosts, ports, error text).
    "view_health_details": "sites.view_site",
}

# The groups a migration creates (sites/migrations): what each may do.
GROUPS: dict[str, list[str]] = {
    "Site operators": ["sites.view_site", "sites.add_site", "sites.change_site", "sites.delete_site", "jobs.view_job"],
    "Site viewers": ["sites.view_site", "jobs.view_job"],
}


def can(user: Any, operation: str) -> bool:
    """May ``user`` perform ``operation``? Unknown operations are refused."""
    permission = OPERATIONS.get(operation)
    if permission is None or user is None or not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_active and user.has_perm(permission))


class ApiPermission(BasePermission):
    """Checks ``view.operations[method]`` against the rule set.

    Unauthenticated callers are refused here too, and DRF answers them 401;
    authenticated callers without the permission get 403.
    """

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        operations: dict[str, str] = getattr(view, "operations", {})
        method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
        operation = operations.get(method or "")
        if operation is None:
            # A method the view does not implement answers 405 below; one it
            # implements without naming an operation is refused.
            return not hasattr(view, (method or "").lower())
        return can(request.user, operation)
