"""The configuration files wpfleet writes for a site: nginx server block, PHP pool and ini."""

from __future__ import annotations

from django.conf import settings

from sites.models.naming import SiteNames


def nginx_server_block(names: SiteNames) -> str:
    # A one-click login link (sites.ops.wordpress) is a credential until its
    # first use: requests carrying one are not written to the access log.
    return f"""map $arg_wpfleet_login $wpfleet_loggable {{
    "" 1;
    default 0;
}}

server {{
    listen 80;
    access_log /var/log/nginx/access.log combined if=$wpfleet_loggable;
    root /var/www/html;
    index index.php;

    location / {{
        try_files $uri $uri/ /index.php?$args;
    }}

    # Dot-paths are never served (.git, .env, .user.ini, and a restore's
    # work directories, sites.provisioning.restore), but /.well-known/.
    location ~ /\\.(?!well-known/) {{
        return 404;
    }}

    location ~ \\.php$ {{
        fastcgi_pass {names.php}:9000;
        fastcgi_index index.php;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HTTPS on;
        # Caddy forwards only the site's own hostnames here (a route and an
        # alias per hostname, strict SNI): WordPress sees the one asked for.
        fastcgi_param HTTP_HOST $host;
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


# The must-use plugin behind the panel's one-click login (sites.ops.wordpress).
# A link carries "<user id>.<expiry>.<nonce>.<signature>": the signature is an
# HMAC with the site's own auth salt (the panel never learns it), the nonce a
# transient that the first use deletes, so a link works once, until it expires.
LOGIN_PLUGIN_PATH = "/var/www/html/wp-content/mu-plugins/wpfleet-login.php"
LOGIN_PLUGIN = r"""<?php
/*
 * Plugin Name: wpfleet one-click login
 * Description: Lets the hosting panel open wp-admin with a signed link that works once, for 60 seconds or less. Installed and rewritten by wpfleet: edits are lost.
 */
add_action('init', function () {
    if (!isset($_GET['wpfleet_login'])) {
        return;
    }
    nocache_headers();
    $parts = explode('.', (string) wp_unslash($_GET['wpfleet_login']));
    $user = false;
    if (count($parts) === 4) {
        list($uid, $expires, $nonce, $signature) = $parts;
        $expected = hash_hmac('sha256', "wpfleet-login|$uid|$expires|$nonce", wp_salt('auth'));
        if (hash_equals($expected, $signature)
            && ctype_digit($uid) && ctype_digit($expires) && (int) $expires >= time()
            && preg_match('/^[A-Za-z0-9]{32}$/', $nonce)
            && get_transient('wpfleet_login_' . $nonce) !== false
            && delete_transient('wpfleet_login_' . $nonce)) {
            $candidate = get_user_by('id', (int) $uid);
            if ($candidate && user_can($candidate, 'manage_options')) {
                $user = $candidate;
            }
        }
    }
    if (!$user) {
        wp_safe_redirect(wp_login_url());
        exit;
    }
    wp_set_auth_cookie($user->ID, false, is_ssl());
    wp_safe_redirect(admin_url());
    exit;
}, 0);
"""
