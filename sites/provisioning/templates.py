"""The configuration files wpfleet writes for a site: nginx server block, PHP pool and ini."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from django.conf import settings

from sites.models.naming import SiteNames

# The page cache's volume is mounted here in the site's nginx and PHP
# containers; nginx keeps one file per page in PAGE_CACHE_DIR, named by the
# md5 of its key (no sub-directory levels), so the site's PHP can delete a
# page by computing its name, and all of them by listing the directory.
# That works with any nginx (the official image has no purge module).
PAGE_CACHE_MOUNT = "/var/cache/wpfleet"
PAGE_CACHE_DIR = f"{PAGE_CACHE_MOUNT}/pages"
# Every hostname the site answers to, one a line, written by the panel (the
# nginx step): each keys pages of its own, which the purge deletes too.
PAGE_CACHE_HOSTS = f"{PAGE_CACHE_MOUNT}/hosts"
# nginx makes its cache files 0600 and owns them; deleting one needs write
# access to the directory only. nginx's worker and PHP run as different
# users in the official images (nginx 101, www-data 33), and only this
# site's two containers mount the volume: the directory is open to both.
PAGE_CACHE_DIR_MODE = 0o777

# Cookies that mean a visitor sees a page of their own: logged in (or was,
# wordpress_<hash>), a post's password, a comment's author, a WooCommerce
# cart or session. Any of them, anywhere in the header, bypasses the cache.
# (The backstop for names PHP would decode into one of these: WordPress
# and the purge plugin send no-cache headers to a logged-in user, and nginx
# never stores such an answer, nor one that sets a cookie.)
_PRIVATE_COOKIES = (
    "wordpress_[a-f0-9]+|wordpress_logged_in_|wordpress_sec_|wordpress_no_cache|wp-postpass_|comment_author_"
    "|woocommerce_items_in_cart|woocommerce_cart_hash|wp_woocommerce_session_"
)
# Never cached: the dashboard, login, XML-RPC, cron, the REST API (by path;
# by query string it has one) and WooCommerce's own pages.
# The loopback ports a site's PHP-FPM listens on: the first for a new site;
# a PHP switch starts the next container on the other one beside the
# serving one (both in nginx's network namespace).
FPM_PORTS = (9000, 9001)

_PRIVATE_PATHS = (
    r"^/(wp-admin/|wp-login\.php|xmlrpc\.php|wp-cron\.php|wp-json(/|$)|index\.php/|cart/|checkout/|my-account/)"
)


def nginx_server_block(
    names: SiteNames, page_cache: bool = True, *, body_max: str = "64M", php_port: int = FPM_PORTS[0]
) -> str:
    """The site's nginx configuration (conf.d is included in nginx's http block).

    ``body_max``: the largest request body, the site's post_max_size (PHP
    would drop a larger one anyway). ``php_port``: the loopback port of the
    PHP-FPM nginx passes requests to (the site's PHP container shares
    nginx's network namespace; a PHP switch's next one listens on the other
    port, sites.provisioning.php_switch).
    """
    # A one-click login link (sites.ops.wordpress) is a credential until its
    # first use: requests carrying one are not written to the access log.
    head = """map $arg_wpfleet_login $wpfleet_loggable {
    "" 1;
    default 0;
}

# PHP compresses its answers itself (php_ini) for a client that takes gzip:
# it is told gzip or nothing, so that the page cache holds two forms of a
# page at most, each compressed once, and Caddy passes them as they are.
map $http_accept_encoding $wpfleet_gzip {
    default "";
    "~*\\bgzip\\b" gzip;
}
"""
    cache_php = ""
    if page_cache:
        seconds = settings.WPFLEET_PAGE_CACHE_SECONDS
        megabytes = max(1, settings.WPFLEET_PAGE_CACHE_SIZE // 1024**2)
        head += f"""
# The page cache (docs/performance.md, "Page cache"). One nginx serves one
# site: these names are this site's only.
fastcgi_cache_path {PAGE_CACHE_DIR} keys_zone=wpfleet_pages:2m max_size={megabytes}m inactive={seconds}s use_temp_path=off;

map $request_method $wpfleet_skip_method {{
    GET 0;
    HEAD 0;
    default 1;
}}
# Any query string (even an empty one: "/?" is another key than "/"): a
# search, a preview, a login link, a REST route, a cart action. Only plain
# paths are cached, so a purge knows every cached form of a page.
map $request_uri $wpfleet_skip_args {{
    default 0;
    "~\\?" 1;
}}
# By the path asked for (/wp-json/ and /cart/ become /index.php below) and
# by the script that runs (decoded: /wp-%61dmin/ is /wp-admin/).
map $request_uri $wpfleet_skip_request {{
    default 0;
    "~*{_PRIVATE_PATHS}" 1;
}}
map $uri $wpfleet_skip_path {{
    default 0;
    "~*{_PRIVATE_PATHS}" 1;
}}
map $http_cookie $wpfleet_skip_cookie {{
    default 0;
    "~*({_PRIVATE_COOKIES})" 1;
}}
# The cache keys on gzip-or-not itself and ignores Vary (PHP's compression
# says Vary: Accept-Encoding, and browsers send many spellings of it, each
# a copy the purge could not name); an answer that varies on anything else
# (a plugin's Vary: Cookie) is not stored.
map $upstream_http_vary $wpfleet_skip_vary {{
    "" 0;
    "~*^\\s*accept-encoding\\s*$" 0;
    default 1;
}}
# A method the cache never looks at (POST) has no status of its own: BYPASS too.
map $upstream_cache_status $wpfleet_cache_status {{
    "" BYPASS;
    default $upstream_cache_status;
}}
"""
        cache_php = f"""
        # Keyed by scheme (Caddy's X-Forwarded-Proto), method, host, the
        # path and gzip or not: another hostname or scheme never reads this entry.
        fastcgi_cache wpfleet_pages;
        fastcgi_cache_key "$http_x_forwarded_proto$request_method$host$request_uri$wpfleet_gzip";
        fastcgi_cache_valid 200 301 302 {seconds}s;
        fastcgi_cache_valid 404 60s;
        # A page that only the visitor may see is neither read from the cache nor written to it
        # (an Authorization or X-WP-Nonce header: an authenticated REST call).
        fastcgi_cache_bypass $wpfleet_skip_method $wpfleet_skip_args $wpfleet_skip_request $wpfleet_skip_path $wpfleet_skip_cookie $http_authorization $http_x_wp_nonce;
        fastcgi_no_cache $wpfleet_skip_method $wpfleet_skip_args $wpfleet_skip_request $wpfleet_skip_path $wpfleet_skip_cookie $http_authorization $http_x_wp_nonce $wpfleet_skip_vary;
        fastcgi_ignore_headers Vary;
        # A burst of misses reaches PHP once; an expired page is served while one request refreshes it.
        fastcgi_cache_lock on;
        fastcgi_cache_lock_timeout 5s;
        fastcgi_cache_use_stale updating error timeout http_500 http_503;
        fastcgi_cache_background_update on;
        add_header X-Cache $wpfleet_cache_status always;
"""
    return f"""{head}
server {{
    listen 80;
    access_log /var/log/nginx/access.log combined if=$wpfleet_loggable;
    client_max_body_size {body_max};
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
        fastcgi_pass 127.0.0.1:{php_port};
        fastcgi_index index.php;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HTTPS on;
        # Caddy forwards only the site's own hostnames here (a route and an
        # alias per hostname, strict SNI): WordPress sees the one asked for.
        fastcgi_param HTTP_HOST $host;
        fastcgi_param HTTP_ACCEPT_ENCODING $wpfleet_gzip;{cache_php}    }}
}}
"""


def php_pool_config(port: int = FPM_PORTS[0]) -> str:
    # Appended after the image's own pool files: ondemand keeps an idle site
    # at a single master process. PHP-FPM listens on loopback only: its
    # network namespace is its nginx's, whose address is on a backend shard
    # beside other sites' nginx, and FastCGI from there would run any PHP
    # file as this site.
    return (
        "[www]\n"
        f"listen = 127.0.0.1:{port}\n"
        "listen.allowed_clients = 127.0.0.1\n"
        f"pm = {settings.WPFLEET_PHP_PM}\n"
        f"pm.max_children = {settings.WPFLEET_PHP_MAX_CHILDREN}\n"
        "pm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = 1\n"
        "pm.process_idle_timeout = 10s\n"
        "pm.max_requests = 500\n"
    )


def php_ini(opcache: str | None = None, values: Mapping[str, str | int] | None = None) -> str:
    """The site's php.ini additions: its own values (sites.models.php), and the opcache mode (default: WPFLEET_PHP_OPCACHE)."""
    own = "".join(f"{key} = {value}\n" for key, value in sorted((values or {}).items()))
    # Compressed once by PHP (for a client that takes gzip, nginx_server_block)
    # and cached so, rather than by Caddy at every answer: a cached 60 kB page
    # is 11 kB to send, and no hit costs any compression.
    compression = "zlib.output_compression = On\nzlib.output_compression_level = 6\n"
    if (opcache or settings.WPFLEET_PHP_OPCACHE) == "shm":
        return own + compression
    # Compiled scripts in files instead of shared memory: an opcache in shared
    # memory keeps about 20 MB per visited WordPress site that the kernel can
    # never reclaim; in files they are page cache, reclaimed under pressure,
    # for about 15 ms more per request (measured on the lab, docs/performance.md).
    # The CLI too (the install, cron, the panel's calls): they share the
    # file cache with php-fpm, and a new site's comes compiled from its
    # template (sites.provisioning.steps.site_template).
    return own + compression + "opcache.file_cache = /tmp\nopcache.file_cache_only = 1\nopcache.enable_cli = 1\n"


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

# The must-use plugin that purges the page cache when content changes; its
# source is a file of its own (sites/provisioning/php/) so that it can be read
# and linted as PHP.
CACHE_PLUGIN_PATH = "/var/www/html/wp-content/mu-plugins/wpfleet-cache.php"
CACHE_PLUGIN = (Path(__file__).parent / "php" / "wpfleet-cache.php").read_text()

# WordPress runs its cron on visits (a request to itself from a visitor's
# page view) unless DISABLE_WP_CRON: the worker runs it instead
# (sites.ops.cron), on time whether or not anyone visits. Must-use plugins
# load before WordPress decides (wp_cron() on wp_loaded), so the constant
# set here takes effect without editing the site's wp-config.php.
CRON_PLUGIN_PATH = "/var/www/html/wp-content/mu-plugins/wpfleet-cron.php"
CRON_PLUGIN = r"""<?php
/*
 * Plugin Name: wpfleet cron
 * Description: WordPress cron is run by the hosting panel on a schedule, not by visits. Installed and rewritten by wpfleet: edits are lost.
 */
if (!defined('DISABLE_WP_CRON')) {
    define('DISABLE_WP_CRON', true);
}
"""

# Every must-use plugin wpfleet installs in a site (one directory), by path.
PLUGINS: dict[str, str] = {
    LOGIN_PLUGIN_PATH: LOGIN_PLUGIN,
    CACHE_PLUGIN_PATH: CACHE_PLUGIN,
    CRON_PLUGIN_PATH: CRON_PLUGIN,
}
