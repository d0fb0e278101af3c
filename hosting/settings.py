"""wpfleet settings: every value comes from the environment (or ``.env``).

``make up`` writes ``.env`` at the repository root on first run with
generated secrets; the process environment overrides it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from hosting import env as envmod
from hosting.env import DbAdmin, Limits

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
env = envmod.load(BASE_DIR)

SECRET_KEY = env.text("DJANGO_SECRET_KEY")
DEBUG = env.flag("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.items("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.items("DJANGO_CSRF_TRUSTED_ORIGINS", ["http://127.0.0.1:8000", "http://localhost:8000"])

# --- HTTPS in production (docs/deploy.md) ------------------------------------------
# Off by default because the lab serves the panel over plain http on
# loopback; `manage.py check --deploy` is clean with the production values.
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it
# from clients' requests), Django knows a request came over https.
if env.flag("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.flag("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env.integer("DJANGO_SECURE_HSTS_SECONDS", 0, min=0, max=10 * 365 * 86400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.flag("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env.flag("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env.flag("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
# Failed admin logins allowed per user name and client address in the window.
WPFLEET_LOGIN_FAILURES = env.integer("WPFLEET_LOGIN_FAILURES", 5, min=1, max=1000)
# Failed admin logins from one address, whatever user names it tries.
WPFLEET_LOGIN_ADDRESS_FAILURES = env.integer(
    "WPFLEET_LOGIN_ADDRESS_FAILURES", 4 * WPFLEET_LOGIN_FAILURES, min=1, max=10000
)
WPFLEET_LOGIN_WINDOW_SECONDS = env.integer("WPFLEET_LOGIN_WINDOW_SECONDS", 900, min=10, max=86400)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "sites",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hosting.urls"
WSGI_APPLICATION = "hosting.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.database("DATABASE_URL", "sqlite:///var/wpfleet.sqlite3", base_dir=BASE_DIR)}
# Lets two test runs share a machine without sharing a test database.
_test_db = env.text("DATABASE_TEST_NAME", "")
if _test_db:
    DATABASES["default"]["TEST"]["NAME"] = (
        str(VAR_DIR / _test_db) if DATABASES["default"]["ENGINE"].endswith("sqlite3") else _test_db
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Bodies larger than this are refused before any parsing (a site name is 32 bytes).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.integer("WPFLEET_MAX_BODY_BYTES", 64 * 1024, min=1024)

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first so that anonymous API calls get 401 with a
        # WWW-Authenticate header instead of 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view names the operation each method performs; sites.permissions
    # maps it to a model permission, the same rule set the admin uses.
    "DEFAULT_PERMISSION_CLASSES": ["sites.permissions.ApiPermission"],
    # Every answer, errors included, is JSON; people browse the API at /api/docs/.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # How many proxies' addresses end X-Forwarded-For: the client's address is
    # the one the last proxy saw (what it appended), never what the client
    # sent itself. Behind the TLS proxy, 1; otherwise X-Forwarded-For is
    # ignored and the address is the connection's. The API's throttles and
    # the admin login's (hosting.login_throttle) both read it.
    "NUM_PROXIES": 1 if env.flag("DJANGO_BEHIND_TLS_PROXY", False) else 0,
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.text("WPFLEET_API_RATE", "1200/min"),
        "health": env.text("WPFLEET_HEALTH_RATE", "30/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sites.api.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "wpfleet API",
    "DESCRIPTION": "Create, inspect and delete isolated WordPress sites.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"SiteStatusEnum": "sites.models.Site.Status", "JobStatusEnum": "jobs.models.Job.Status"},
}

# Throttle counters (API, health, admin logins) must be shared by every
# gunicorn worker and the worker cluster: the control database holds them
# (its table is made by `manage.py createcachetable`, run by `make up`).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "wpfleet_cache",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}

# --- wpfleet: what a site is made of -------------------------------------

WPFLEET_BASE_DOMAIN = env.text("WPFLEET_BASE_DOMAIN", "wpfleet.test").lower().strip(".")
if not re.fullmatch(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", WPFLEET_BASE_DOMAIN
):
    raise ImproperlyConfigured(f"WPFLEET_BASE_DOMAIN={WPFLEET_BASE_DOMAIN!r} is not a DNS name")

# Names a site may not take because the infrastructure uses them (or they
# would read as one of its hostnames).
WPFLEET_RESERVED_NAMES = frozenset(
    env.items(
        "WPFLEET_RESERVED_NAMES",
        [
            "caddy",
            "mariadb",
            "mysql",
            "backend",
            "admin",
            "api",
            "www",
            "mail",
            "localhost",
            "root",
            "wpfleet",
            "panel",
        ],
    )
)
# The WordPress admin's email when a site is created without one.
WPFLEET_DEFAULT_ADMIN_EMAIL = env.text("WPFLEET_DEFAULT_ADMIN_EMAIL", f"webmaster@{WPFLEET_BASE_DOMAIN}")
# How long the provisioner waits for a new PHP container to have written its
# wp-config.php (the image's entrypoint does it at start) before installing.
WPFLEET_WORDPRESS_READY_SECONDS = env.number("WPFLEET_WORDPRESS_READY_SECONDS", 60.0, min=1, max=3600)
# How long a one-click login link to wp-admin stays valid (it also works only once).
WPFLEET_LOGIN_LINK_SECONDS = env.integer("WPFLEET_LOGIN_LINK_SECONDS", 60, min=5, max=600)

# Owner label written on every Docker resource: what does not carry it is
# never modified or removed.
WPFLEET_OWNER = env.text("WPFLEET_OWNER", "wpfleet")

# MariaDB (state-01): the panel's own account, and the address site
# containers use to reach the same server. The account holds only what
# provisioning needs (docs/deploy.md); root is refused.
WPFLEET_DB_ADMIN: DbAdmin = {
    "host": env.text("WPFLEET_DB_ADMIN_HOST", "127.0.0.1"),
    "port": env.integer("WPFLEET_DB_ADMIN_PORT", 3306, min=1, max=65535),
    "user": env.text("WPFLEET_DB_ADMIN_USER", "wpfleet_panel"),
    "password": env.text("WPFLEET_DB_ADMIN_PASSWORD", "", allow_empty=True),
    "connect_timeout": env.integer("WPFLEET_DB_ADMIN_TIMEOUT", 5, min=1, max=120),
}
if WPFLEET_DB_ADMIN["user"] == "root":
    raise ImproperlyConfigured(
        "WPFLEET_DB_ADMIN_USER=root: the panel must use its own least-privileged account (docs/deploy.md)"
    )
# Where wpfleet records the database accounts it created (MariaDB has no
# comment on accounts): the panel's account needs ALL on this schema only.
WPFLEET_DB_META_SCHEMA = env.text("WPFLEET_DB_META_SCHEMA", "wpfleet_meta")
if not re.fullmatch(r"[a-z0-9_]{1,64}", WPFLEET_DB_META_SCHEMA) or WPFLEET_DB_META_SCHEMA.startswith("wp_"):
    raise ImproperlyConfigured(
        f"WPFLEET_DB_META_SCHEMA={WPFLEET_DB_META_SCHEMA!r} must be a plain identifier outside the sites' wp_ prefix"
    )
WPFLEET_SITE_DB_HOST = env.host_port("WPFLEET_SITE_DB_HOST", "10.10.0.20:3306")
# Host pattern of each site's account: the addresses its PHP containers
# connect from, so a leaked site password is useless from anywhere else.
# PHP-FPM shares its nginx's address on a backend shard: the default covers
# the lab's shard 0 (10.201.0.0/16) and WPFLEET_BACKEND_SHARD_POOL
# (10.202.0.0/16), with the engine's own pool (10.200.0.0/16) where sites
# of an older wpfleet had their own network. "%" is refused.
WPFLEET_DB_USER_HOST = env.text("WPFLEET_DB_USER_HOST", "10.200.0.0/255.252.0.0")
if not re.fullmatch(r"[A-Za-z0-9.%_:\-/]{1,255}", WPFLEET_DB_USER_HOST):
    raise ImproperlyConfigured(f"WPFLEET_DB_USER_HOST={WPFLEET_DB_USER_HOST!r} is not a MariaDB host pattern")
if WPFLEET_DB_USER_HOST.strip("%.") == "":
    raise ImproperlyConfigured(
        f"WPFLEET_DB_USER_HOST={WPFLEET_DB_USER_HOST!r} lets a site's account log in from anywhere: "
        "use the Docker address range of the sites, e.g. 10.200.0.0/255.252.0.0"
    )
WPFLEET_DB_MAX_USER_CONNECTIONS = env.integer("WPFLEET_DB_MAX_USER_CONNECTIONS", 30, min=1, max=10000)
# Per-account statement time limit (0: none): a tenant's runaway query ends.
WPFLEET_DB_MAX_STATEMENT_SECONDS = env.number("WPFLEET_DB_MAX_STATEMENT_SECONDS", 60.0, min=0, max=86400)

# Docker host (app-01): empty means the SDK's own defaults (DOCKER_HOST, the
# local socket).
WPFLEET_DOCKER_HOST = env.text("WPFLEET_DOCKER_HOST", "", allow_empty=True)
WPFLEET_DOCKER_TIMEOUT = env.integer("WPFLEET_DOCKER_TIMEOUT", 60, min=1, max=600)
WPFLEET_PHP_IMAGE = env.text("WPFLEET_PHP_IMAGE", "wordpress:php8.2-fpm")
WPFLEET_NGINX_IMAGE = env.text("WPFLEET_NGINX_IMAGE", "nginx:alpine")
WPFLEET_BACKEND_NETWORK = env.text("WPFLEET_BACKEND_NETWORK", "wp_backend")
# The address plan (docs/performance.md, "Address plan"). Caddy reaches each
# site's nginx on a backend network; a Linux bridge holds at most 1,024
# ports, so backend networks are shards of at most WPFLEET_BACKEND_SHARD_SIZE
# sites each: the first is WPFLEET_BACKEND_NETWORK (made by the host's
# set-up, lab/up.sh), the next ones are made by the panel, each a /22 of
# WPFLEET_BACKEND_SHARD_POOL not used by another network, with Caddy attached.
WPFLEET_BACKEND_SHARD_SIZE = env.integer("WPFLEET_BACKEND_SHARD_SIZE", 500, min=1, max=1000)
WPFLEET_BACKEND_SHARD_POOL = env.network("WPFLEET_BACKEND_SHARD_POOL", "10.202.0.0/16", max_prefix=22)
# The reconciler (sites.ops.reconcile): repairs run this many at once (after
# an engine crash every site needs one), and this many sites per pass have
# their nginx read for real (an edit inside a container leaves no trace in
# the engine's listing), each site in its turn.
# A housekeeping pass (reconcile, backups, usage, cron) runs alone: the next
# minute's is skipped while one runs; a pass's lock lapses after this long
# (a worker killed in a pass).
WPFLEET_HOUSEKEEPING_LOCK_SECONDS = env.integer("WPFLEET_HOUSEKEEPING_LOCK_SECONDS", 600, min=60, max=86400)
WPFLEET_RECONCILE_PARALLEL = env.integer("WPFLEET_RECONCILE_PARALLEL", 6, min=1, max=64)
WPFLEET_RECONCILE_DEEP_CHECKS = env.integer("WPFLEET_RECONCILE_DEEP_CHECKS", 20, min=0, max=100000)
# Capacity (sites.ops.capacity, docs/operations.md "Capacity"): a new site is
# refused (HTTP 507) when the host would run out of one of these, rather than
# accepted to fail in its job or to starve the sites already there.
# At most this many sites (0: no count of its own, only the resources below).
WPFLEET_MAX_SITES = env.integer("WPFLEET_MAX_SITES", 1000, min=0, max=1_000_000)
# Sites' ports on the backend shards kept free, of the shards' room (1 + the
# /22s of WPFLEET_BACKEND_SHARD_POOL, times WPFLEET_BACKEND_SHARD_SIZE): a
# shard's members are every container on its bridge (another panel's, the
# operator's), and a /22 of the pool that another network took makes no
# shard. A site holds one port on a shard and no network of its own (its
# PHP-FPM shares its nginx's network namespace).
WPFLEET_CAPACITY_ADDRESS_RESERVE = env.integer("WPFLEET_CAPACITY_ADDRESS_RESERVE", 16, min=0, max=1_000_000)
# What a site is expected to take of the host's memory, not its limits,
# which are ceilings: for a new site's room, and every site's budget. The
# bench measured 21-22 MB per idle site with the caches dropped (containers,
# shims, engine, kernel) with a shim a container, 17-19 MB with the lab's one
# shim a site (16.7 at 1,010 sites), and a 24 GB host thrashing at about 930
# sites of 21 MB once their hot files are counted: about 26 MB each. With
# one shim a site that host held 1,010 sites (at 22m), but short of page
# cache from about 900 on, new sites twice as slow (docs/performance.md).
WPFLEET_CAPACITY_SITE_MEMORY = env.size("WPFLEET_CAPACITY_SITE_MEMORY", "26m")
# Memory the kernel must still have available (MemAvailable) once the new site
# took its share: the other sites' peaks, the panel, MariaDB. The sites'
# budget (WPFLEET_CAPACITY_SITE_MEMORY each) must fit in MemTotal less it too.
WPFLEET_CAPACITY_MEMORY_HEADROOM = env.size("WPFLEET_CAPACITY_MEMORY_HEADROOM", "1g")
# Free space kept on the filesystem of the sites' files: a full disk breaks
# every site at once. That filesystem is WPFLEET_CAPACITY_DISK_PATH; empty:
# WPFLEET_QUOTA_ROOT when quotas are on, else Docker's root /var/lib/docker.
WPFLEET_CAPACITY_DISK_HEADROOM = env.size("WPFLEET_CAPACITY_DISK_HEADROOM", "5g")
WPFLEET_CAPACITY_DISK_PATH = env.text("WPFLEET_CAPACITY_DISK_PATH", "", allow_empty=True)
if WPFLEET_CAPACITY_DISK_PATH and not WPFLEET_CAPACITY_DISK_PATH.startswith("/"):
    raise ImproperlyConfigured(
        f"WPFLEET_CAPACITY_DISK_PATH={WPFLEET_CAPACITY_DISK_PATH!r} must be an absolute path or empty"
    )
# MariaDB connections that must stay free (max_connections minus
# Threads_connected): each site's PHP opens its own, up to
# WPFLEET_DB_MAX_USER_CONNECTIONS, and the panel's jobs need some too.
WPFLEET_CAPACITY_DB_CONNECTIONS_FREE = env.integer("WPFLEET_CAPACITY_DB_CONNECTIONS_FREE", 20, min=0, max=100_000)
WPFLEET_PHP_LIMITS: Limits = {
    "memory": env.size("WPFLEET_PHP_MEMORY", "512m"),
    "cpus": env.number("WPFLEET_PHP_CPUS", 1.0, min=0.01, max=64),
    "pids": env.integer("WPFLEET_PHP_PIDS", 100, min=10, max=100000),
}
WPFLEET_NGINX_LIMITS: Limits = {
    "memory": env.size("WPFLEET_NGINX_MEMORY", "128m"),
    "cpus": env.number("WPFLEET_NGINX_CPUS", 0.5, min=0.01, max=64),
    "pids": env.integer("WPFLEET_NGINX_PIDS", 50, min=5, max=100000),
}
# Where the PHP image keeps the WordPress sources its entrypoint copies into
# an empty /var/www/html (the official image's /usr/src/wordpress). The site's
# volume is mounted there too, so that Docker seeds it at create (denser:
# the copy is not charged to the site); empty: let the entrypoint copy
# (about 0.3 s faster per site).
WPFLEET_PHP_SEED_FROM = env.text("WPFLEET_PHP_SEED_FROM", "/usr/src/wordpress", allow_empty=True)
if WPFLEET_PHP_SEED_FROM and not WPFLEET_PHP_SEED_FROM.startswith("/"):
    raise ImproperlyConfigured(f"WPFLEET_PHP_SEED_FROM={WPFLEET_PHP_SEED_FROM!r} must be an absolute path or empty")
# php-fpm process manager for each site's pool: ondemand keeps an idle site
# at one master process.
WPFLEET_PHP_PM = env.text("WPFLEET_PHP_PM", "ondemand", choices=("ondemand", "dynamic", "static"))
WPFLEET_PHP_MAX_CHILDREN = env.integer("WPFLEET_PHP_MAX_CHILDREN", 5, min=1, max=500)
# Where opcache keeps compiled scripts: "file" (page cache, reclaimable) or
# "shm" (the image's default: shared memory, about 20 MB per visited site).
WPFLEET_PHP_OPCACHE = env.text("WPFLEET_PHP_OPCACHE", "file", choices=("file", "shm"))

# The PHP versions a site may run, each with its image (the lab builds 8.2
# from bookworm and 8.4 from trixie): "8.2=image,8.4=image". New sites get
# WPFLEET_PHP_DEFAULT_VERSION (the first one unless set); a site changes
# with PATCH {"php_version": ...} (sites.provisioning.php_switch).
WPFLEET_PHP_VERSIONS: dict[str, str] = env.pairs(
    "WPFLEET_PHP_VERSIONS", {"8.2": WPFLEET_PHP_IMAGE}, key_pattern=r"[0-9]+\.[0-9]+"
)
WPFLEET_PHP_DEFAULT_VERSION = env.text(
    "WPFLEET_PHP_DEFAULT_VERSION", next(iter(WPFLEET_PHP_VERSIONS)), choices=tuple(WPFLEET_PHP_VERSIONS)
)
# The bounds of what a site may put in its php.ini (PATCH {"php": {...}};
# sites.models.php_settings has the defaults). memory_limit cannot pass the
# PHP container's memory.
WPFLEET_PHP_MEMORY_LIMIT_MAX = env.size("WPFLEET_PHP_MEMORY_LIMIT_MAX", "512m")
if WPFLEET_PHP_MEMORY_LIMIT_MAX > WPFLEET_PHP_LIMITS["memory"]:
    raise ImproperlyConfigured("WPFLEET_PHP_MEMORY_LIMIT_MAX is more than the PHP container's WPFLEET_PHP_MEMORY")
WPFLEET_PHP_UPLOAD_MAX = env.size("WPFLEET_PHP_UPLOAD_MAX", "256m")
WPFLEET_PHP_EXECUTION_MAX_SECONDS = env.integer("WPFLEET_PHP_EXECUTION_MAX_SECONDS", 300, min=1, max=3600)

# Disk quotas (sites.infra.quota): each site's files live in a directory of
# its own on a filesystem mounted with project quotas at WPFLEET_QUOTA_ROOT
# (the lab makes one; docs/deploy.md for production). Empty: no quotas, the
# sites' files are plain Docker volumes.
WPFLEET_QUOTA_ROOT = env.text("WPFLEET_QUOTA_ROOT", "", allow_empty=True)
if WPFLEET_QUOTA_ROOT and not WPFLEET_QUOTA_ROOT.startswith("/"):
    raise ImproperlyConfigured(f"WPFLEET_QUOTA_ROOT={WPFLEET_QUOTA_ROOT!r} must be an absolute path or empty")
if any(c in WPFLEET_QUOTA_ROOT for c in ",:="):  # a site's /tmp is an overlay: its mount options list these paths
    raise ImproperlyConfigured(f"WPFLEET_QUOTA_ROOT={WPFLEET_QUOTA_ROOT!r} may not contain ',', ':' or '='")
WPFLEET_DISK_QUOTA = env.size("WPFLEET_DISK_QUOTA", "2g")
WPFLEET_DISK_QUOTA_MAX = env.size("WPFLEET_DISK_QUOTA_MAX", "200g")
if WPFLEET_DISK_QUOTA > WPFLEET_DISK_QUOTA_MAX:
    raise ImproperlyConfigured("WPFLEET_DISK_QUOTA is more than WPFLEET_DISK_QUOTA_MAX")
# /tmp of a site's PHP container: memory (tmpfs), bounded, not its disk.
WPFLEET_PHP_TMP_SIZE = env.size("WPFLEET_PHP_TMP_SIZE", "64m")

# WordPress cron (sites.ops.cron): sites run with DISABLE_WP_CRON; the worker
# runs each ACTIVE site's due events every interval (each site at its own
# offset), this many sites at once, each run cut at the timeout. A site whose
# cron failed this many times in a row is flagged and no longer run until an
# operator clears it (or a run by hand succeeds).
WPFLEET_CRON_INTERVAL_SECONDS = env.integer("WPFLEET_CRON_INTERVAL_SECONDS", 300, min=60, max=86400)
WPFLEET_CRON_PARALLEL = env.integer("WPFLEET_CRON_PARALLEL", 2, min=1, max=64)
WPFLEET_CRON_TIMEOUT_SECONDS = env.integer("WPFLEET_CRON_TIMEOUT_SECONDS", 120, min=5, max=3600)
WPFLEET_CRON_MAX_FAILURES = env.integer("WPFLEET_CRON_MAX_FAILURES", 3, min=1, max=100)
# A site whose schedule (its "cron" option) holds no event is looked at again
# this much later; one whose earliest event lies ahead, at that event. Only
# sites with an event due are run (sites.ops.cron._postpone_idle).
WPFLEET_CRON_IDLE_SECONDS = env.integer("WPFLEET_CRON_IDLE_SECONDS", 3600, min=60, max=86400)

# Usage (sites.ops.usage): memory, CPU, disk and requests of every site,
# read in bulk by the worker this often and stored on the sites.
WPFLEET_USAGE_INTERVAL_SECONDS = env.integer("WPFLEET_USAGE_INTERVAL_SECONDS", 60, min=10, max=3600)
# Lines a logs request may ask for (GET /api/sites/<name>/logs?lines=N).
WPFLEET_LOG_LINES_MAX = env.integer("WPFLEET_LOG_LINES_MAX", 1000, min=10, max=100000)

# The page cache in each site's nginx (sites.provisioning.templates): at most
# this much disk per site (its own volume), entries kept this long unless a
# change purges them first; a site turns it off with page_cache=false.
WPFLEET_PAGE_CACHE_SIZE = env.size("WPFLEET_PAGE_CACHE_SIZE", "100m")
WPFLEET_PAGE_CACHE_SECONDS = env.integer("WPFLEET_PAGE_CACHE_SECONDS", 3600, min=1, max=86400 * 7)

# Caddy (app-01).
WPFLEET_CADDY_CONTAINER = env.text("WPFLEET_CADDY_CONTAINER", "caddy")
# Caddy serves a hostname while <routes dir>/<hostname> exists in its
# container (sites/infra/caddy.py; the Caddyfile in lab/caddy/).
WPFLEET_CADDY_ROUTES_DIR = env.text("WPFLEET_CADDY_ROUTES_DIR", "/etc/caddy/routes")
# Where the live check (and the tests) reach Caddy: its HTTPS listener, and
# its plain-HTTP one (which must answer a site's hostname with a redirect).
WPFLEET_CADDY_URL: str = env.url("WPFLEET_CADDY_URL", "https://127.0.0.1:443", schemes=("https",))
WPFLEET_CADDY_HTTP_URL: str = env.url("WPFLEET_CADDY_HTTP_URL", "http://127.0.0.1:80", schemes=("http",))
# Certificates of the sites are checked against this PEM bundle (the lab's
# own CA, var/lab-ca.crt); empty: the system's authorities (ACME in production).
WPFLEET_CA_BUNDLE = env.text("WPFLEET_CA_BUNDLE", "")
if WPFLEET_CA_BUNDLE and not Path(WPFLEET_CA_BUNDLE).is_file():
    raise ImproperlyConfigured(f"WPFLEET_CA_BUNDLE={WPFLEET_CA_BUNDLE!r} is not a file")

# Backups (sites.infra.restic, docs/backups.md): a restic repository, local
# (a path), SFTP (sftp:user@host:/path), S3 (s3:https://host/bucket/path) or
# B2. Empty: no backups (the API answers 503, a delete takes no final backup).
WPFLEET_BACKUP_REPOSITORY = env.text("WPFLEET_BACKUP_REPOSITORY", "", allow_empty=True)
# The repository's password (WPFLEET_BACKUP_PASSWORD_FILE: a file holding it);
# losing it loses every backup.
WPFLEET_BACKUP_PASSWORD = env.text("WPFLEET_BACKUP_PASSWORD", "", allow_empty=True)
if WPFLEET_BACKUP_REPOSITORY and not WPFLEET_BACKUP_PASSWORD:
    raise ImproperlyConfigured("WPFLEET_BACKUP_REPOSITORY is set: WPFLEET_BACKUP_PASSWORD (or _FILE) is required")
# SFTP: the private key and the known_hosts file ssh checks the server against.
WPFLEET_BACKUP_SFTP_KEY_FILE = env.text("WPFLEET_BACKUP_SFTP_KEY_FILE", "", allow_empty=True)
WPFLEET_BACKUP_SFTP_KNOWN_HOSTS = env.text("WPFLEET_BACKUP_SFTP_KNOWN_HOSTS", "", allow_empty=True)
for _name, _file in (
    ("WPFLEET_BACKUP_SFTP_KEY_FILE", WPFLEET_BACKUP_SFTP_KEY_FILE),
    ("WPFLEET_BACKUP_SFTP_KNOWN_HOSTS", WPFLEET_BACKUP_SFTP_KNOWN_HOSTS),
):
    if _file and not Path(_file).is_file():
        raise ImproperlyConfigured(f"{_name}={_file!r} is not a file")
# S3 (and S3-compatible stores): the access key; restic reads these from its
# own environment only.
WPFLEET_BACKUP_S3_ACCESS_KEY_ID = env.text("WPFLEET_BACKUP_S3_ACCESS_KEY_ID", "", allow_empty=True)
WPFLEET_BACKUP_S3_SECRET_ACCESS_KEY = env.text("WPFLEET_BACKUP_S3_SECRET_ACCESS_KEY", "", allow_empty=True)
# Every ACTIVE site is backed up every this many hours (0: no scheduled
# backups), each at its own time of day; the panel's control database too.
WPFLEET_BACKUP_EVERY_HOURS = env.integer("WPFLEET_BACKUP_EVERY_HOURS", 24, min=0, max=24 * 31)
WPFLEET_PANEL_BACKUP_EVERY_HOURS = env.integer("WPFLEET_PANEL_BACKUP_EVERY_HOURS", 24, min=0, max=24 * 31)
# A site's scheduled backup that failed for good (its attempts spent within
# minutes: an engine or a repository down for longer) is due again this many
# minutes later, not at the site's next slot a whole period away.
WPFLEET_BACKUP_RETRY_MINUTES = env.integer("WPFLEET_BACKUP_RETRY_MINUTES", 60, min=1, max=24 * 60)
# The repository's maintenance (retention, forget, prune) every this many hours (0: never).
WPFLEET_BACKUP_MAINTENANCE_EVERY_HOURS = env.integer("WPFLEET_BACKUP_MAINTENANCE_EVERY_HOURS", 24, min=0, max=24 * 31)
# Retention (restic's keep-daily/weekly/monthly, applied per site by the
# daily maintenance job, never by a backup); a deleted site's final backup
# is kept this many days whatever the policy says.
WPFLEET_BACKUP_KEEP_DAILY = env.integer("WPFLEET_BACKUP_KEEP_DAILY", 7, min=1, max=3650)
WPFLEET_BACKUP_KEEP_WEEKLY = env.integer("WPFLEET_BACKUP_KEEP_WEEKLY", 4, min=0, max=520)
WPFLEET_BACKUP_KEEP_MONTHLY = env.integer("WPFLEET_BACKUP_KEEP_MONTHLY", 6, min=0, max=1200)
WPFLEET_BACKUP_KEEP_DELETED_DAYS = env.integer("WPFLEET_BACKUP_KEEP_DELETED_DAYS", 30, min=1, max=3650)
# Backups, restores and the repository's maintenance run in a cluster of
# their own (jobs.queue: queue "backups"): they never hold a worker that
# provisioning needs. At most this many run at once.
WPFLEET_BACKUP_WORKERS = env.integer("WPFLEET_BACKUP_WORKERS", 2, min=1, max=32)
WPFLEET_BACKUP_TIMEOUT_SECONDS = env.integer("WPFLEET_BACKUP_TIMEOUT_SECONDS", 3600, min=60, max=7 * 86400)

# Fernet keys (comma-separated) for secrets the control database keeps, such
# as each site's database password: the first encrypts, all decrypt
# (rotation: docs/deploy.md). Generate one with
# `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
WPFLEET_ENCRYPTION_KEYS = env.items("WPFLEET_ENCRYPTION_KEYS", [])
if not WPFLEET_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("WPFLEET_ENCRYPTION_KEYS is required but not set")
for _key in WPFLEET_ENCRYPTION_KEYS:
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}=", _key):
        raise ImproperlyConfigured(
            "WPFLEET_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 bytes, url-safe base64, 44 characters)"
        )

# The operators' first superuser, created by `make up` (manage.py ensure_superuser).
WPFLEET_ADMIN_USER = env.text("WPFLEET_ADMIN_USER", "admin")
WPFLEET_ADMIN_PASSWORD = env.text("WPFLEET_ADMIN_PASSWORD", "")

# --- jobs -----------------------------------------------------------------

# Provisioning steps that do not depend on each other run side by side, up to
# this many at once; 1 runs them one after another in the seed's order.
WPFLEET_STEP_THREADS = env.integer("WPFLEET_STEP_THREADS", 4, min=1, max=16)
WPFLEET_MAX_ATTEMPTS = env.integer("WPFLEET_MAX_ATTEMPTS", 3, min=1, max=20)
WPFLEET_RETRY_BACKOFF_SECONDS = env.number("WPFLEET_RETRY_BACKOFF_SECONDS", 2.0, min=0, max=3600)
WPFLEET_LIVE_TIMEOUT_SECONDS = env.number("WPFLEET_LIVE_TIMEOUT_SECONDS", 60.0, min=1, max=3600)
WPFLEET_LEASE_SECONDS = env.integer("WPFLEET_LEASE_SECONDS", 30, min=5, max=3600)
WPFLEET_POLL_SECONDS = env.number("WPFLEET_POLL_SECONDS", 0.2, min=0.05, max=3.0)
WPFLEET_WORKERS = env.integer("WPFLEET_WORKERS", 4, min=1, max=64)
WPFLEET_JOB_TIMEOUT_SECONDS = env.integer("WPFLEET_JOB_TIMEOUT_SECONDS", 900, min=30, max=86400)

Q_CLUSTER = {
    "name": "wpfleet",
    "orm": "default",
    "workers": WPFLEET_WORKERS,
    "poll": WPFLEET_POLL_SECONDS,
    "timeout": WPFLEET_JOB_TIMEOUT_SECONDS,
    # The ORM broker hands a task out again after `retry` seconds without an
    # acknowledgement; above the timeout, only a dead worker's task comes back,
    # and the job's own claim makes that second delivery a no-op.
    "retry": WPFLEET_JOB_TIMEOUT_SECONDS + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Task queue",
    # manage.py run_worker starts this cluster beside the main one (its own
    # process, Q_CLUSTER_NAME=wpfleet-backups): the "backups" queue.
    "ALT_CLUSTERS": {
        "wpfleet-backups": {
            "workers": WPFLEET_BACKUP_WORKERS,
            "timeout": WPFLEET_BACKUP_TIMEOUT_SECONDS,
            "retry": WPFLEET_BACKUP_TIMEOUT_SECONDS + 60,
        },
    },
}


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.text("WPFLEET_LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Fault drills: names of provisioning steps after whose apply the provisioner
# raises, to exercise rollback for real ("php" every attempt, "php@1" only the
# first). Empty in production.
WPFLEET_FAULTS = tuple(env.items("WPFLEET_FAULTS", []))
# Crash drills: the worker process kills itself with SIGKILL. "php": as the
# php step starts ("php@1": on attempt 1 only); "php@done" ("php@done@1"):
# once its apply has returned, before its OK is recorded; "backup"
# ("backup@1"): while restic stores a site backup's files. Empty in production.
WPFLEET_CRASH_DURING = tuple(env.items("WPFLEET_CRASH_DURING", []))
