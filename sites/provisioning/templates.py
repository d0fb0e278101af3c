"""The configuration files wpfleet writes for a site: nginx server block, PHP pool and ini, Caddy snippet."""

from __future__ import annotations

from django.conf import settings

from sites.infra.caddy import owner_marker
from sites.models.naming import SiteNames


def caddy_snippet(names: SiteNames) -> str:
    # http:// because TLS is terminated in front of Caddy (as in the seed).
    return (
        f"{owner_marker()} site={names.site}\n"
        f"http://{names.domain} {{\n\tencode gzip\n\treverse_proxy {names.nginx}:80\n}}\n"
    )


def nginx_server_block(names: SiteNames) -> str:
    return f"""server {{
    listen 80;
    root /var/www/html;
    index index.php;

    location / {{
        try_files $uri $uri/ /index.php?$args;
    }}

    location ~ \\.php$ {{
        fastcgi_pass {names.php}:9000;
        fastcgi_index index.php;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HTTPS on;
        fastcgi_param HTTP_HOST {names.domain};
    }}
}}
"""


def php_pool_config() -> str:
    # Appended after the image's own pool files: ondemand keeps an idle site
    # at a single master process.
    return (
        "[www]\n"
        f"pm = {settings.WPFLEET_PHP_PM}\n"
        f"pm.max_children = {settings.WPFLEET_PHP_MAX_CHILDREN}\n"
        "pm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = 1\n"
        "pm.process_idle_timeout = 10s\n"
        "pm.max_requests = 500\n"
    )


def php_ini() -> str:
    if settings.WPFLEET_PHP_OPCACHE == "shm":
        return ""
    # Compiled scripts in files instead of shared memory: an opcache in shared
    # memory keeps about 20 MB per visited WordPress site that the kernel can
    # never reclaim; in files they are page cache, reclaimed under pressure,
    # for about 15 ms more per request (measured on the lab, docs/performance.md).
    return "opcache.file_cache = /tmp\nopcache.file_cache_only = 1\n"
