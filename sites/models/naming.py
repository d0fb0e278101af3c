"""Deterministic names of everything a site owns.

Every resource is found again from the site's name alone, so any step can be
re-applied or undone after a crash without remembering what was created.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class SiteNames:
    site: str

    @property
    def database(self) -> str:
        return f"wp_{self.site}"

    @property
    def db_user(self) -> str:
        return f"wp_{self.site}"

    @property
    def volume(self) -> str:
        return f"wp_{self.site}"

    @property
    def cache_volume(self) -> str:
        # The page cache: written by the site's nginx, purged by its PHP
        # (sites.provisioning.templates); never backed up.
        return f"wpcache_{self.site}"

    @property
    def tmp_volume(self) -> str:
        # The PHP container's /tmp on a host with disk quotas: the site's tmp/
        # over the image's compiled WordPress, shared by every site
        # (sites.provisioning.steps.VolumeStep).
        return f"wptmp_{self.site}"

    @property
    def legacy_network(self) -> str:
        # The network a site's PHP-FPM and nginx shared before PHP joined its
        # nginx's network namespace (sites.provisioning.steps.PhpStep): removed
        # where found, never made.
        return f"wpnet_{self.site}"

    @property
    def php(self) -> str:
        return f"php_{self.site}"

    @property
    def php_next(self) -> str:
        # The new PHP-FPM container while a PHP switch runs (sites.provisioning.php_switch):
        # renamed to ``php`` when it serves. ("-" is never in a site's name.)
        return f"php_{self.site}-next"

    @property
    def nginx(self) -> str:
        return f"nginx_{self.site}"

    @property
    def domain(self) -> str:
        return f"{self.site}.{settings.WPFLEET_BASE_DOMAIN}"

    @property
    def route(self) -> str:
        # Caddy serves the site's hostname while this file exists (sites.infra.caddy).
        return f"{settings.WPFLEET_CADDY_ROUTES_DIR.rstrip('/')}/{self.domain}"

    @property
    def nginx_config(self) -> str:
        return "/etc/nginx/conf.d/default.conf"

    def labels(self, role: str) -> dict[str, str]:
        return {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.site": self.site, "wpfleet.role": role}
