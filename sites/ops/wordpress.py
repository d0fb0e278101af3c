"""What operators do inside a live site's WordPress: a new admin password, a one-click login link.

Both run WordPress's own functions with the PHP CLI in the site's PHP
container, as www-data. The secrets they make (the password, the link's
token) are made there, travel back once on the exec's output and are
returned to the caller: never stored, logged, put in a job record, an
environment variable or a command line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from sites.infra.errors import InfraError
from sites.models import Site
from sites.provisioning.steps import Infra, install_plugins

log = logging.getLogger("wpfleet.wordpress")

# Loads WordPress as a request for the site's https URL (WPFLEET_HOST) would,
# mail silenced; for `php -r` as www-data in the site's PHP container.
LOAD_WORDPRESS = r"""
function wp_mail() { return true; }
$_SERVER['HTTP_HOST'] = getenv('WPFLEET_HOST');
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['HTTPS'] = 'on';
require '/var/www/html/wp-load.php';
"""

_BOOT = (
    LOAD_WORDPRESS
    + r"""$user = get_user_by('login', getenv('WPFLEET_ADMIN_USER'));
if (!$user) { fwrite(STDOUT, "\nWPFLEET-NO-USER\n"); exit(3); }
// The answer is the line after this marker: whatever a plugin prints at shutdown comes after it.
function wpfleet_answer($value) { echo "\nWPFLEET-RESULT ", json_encode($value), "\n"; }
"""
)

NEW_PASSWORD_PHP = (
    _BOOT
    + r"""
$password = wp_generate_password(24, true, false);
wp_set_password($password, $user->ID); // also ends the user's sessions
delete_user_meta($user->ID, 'default_password_nag'); // the password was chosen, not generated at install
wpfleet_answer(['username' => $user->user_login, 'password' => $password]);
"""
)

LOGIN_TOKEN_PHP = (
    _BOOT
    + r"""
$ttl = (int) getenv('WPFLEET_TTL');
$nonce = wp_generate_password(32, false, false);
$expires = time() + $ttl;
set_transient('wpfleet_login_' . $nonce, 1, $ttl);
$signature = hash_hmac('sha256', "wpfleet-login|{$user->ID}|$expires|$nonce", wp_salt('auth'));
wpfleet_answer(['token' => "{$user->ID}.$expires.$nonce.$signature", 'expires' => $expires]);
"""
)


class SiteNotActive(Exception):
    """The operation needs a live site."""


class WordPressUserMissing(Exception):
    """The site's admin user is not in its WordPress (renamed or deleted there)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class LoginLink:
    url: str
    expires_at: datetime


def _run(site: Site, php: str, infra: Infra, extra_env: dict[str, str] | None = None) -> dict:
    if site.status != Site.Status.ACTIVE:
        raise SiteNotActive(f"site {site.name} is {site.get_status_display()}, not active")
    code, output = infra.docker.exec(
        site.names.php,
        ["php", "-r", php],
        user="www-data",
        environment={"WPFLEET_HOST": _home(site), "WPFLEET_ADMIN_USER": site.admin_user, **(extra_env or {})},
    )
    lines = output.splitlines()
    if code == 3 and "WPFLEET-NO-USER" in lines:
        raise WordPressUserMissing(f"WordPress of {site.name} has no user {site.admin_user!r}")
    answer = next((line[len("WPFLEET-RESULT ") :] for line in lines if line.startswith("WPFLEET-RESULT ")), None)
    try:
        result = json.loads(answer) if answer is not None else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        # Only the exit code: the output of a failed run is PHP's, not ours to echo.
        raise InfraError("wordpress", f"PHP in {site.names.php} failed (exit {code})")
    return result


def _home(site: Site) -> str:
    return site.home_domain or site.domain


def new_admin_password(site: Site, infra: Infra | None = None) -> Credentials:
    """Give the site's WordPress admin a new random password; returned once, kept nowhere."""
    result = _run(site, NEW_PASSWORD_PHP, infra or Infra())
    log.info("site %s: new WordPress admin password set for %s", site.name, result["username"])
    return Credentials(username=str(result["username"]), password=str(result["password"]))


def login_link(site: Site, infra: Infra | None = None) -> LoginLink:
    """A URL that opens wp-admin logged in as the site's admin: once, within WPFLEET_LOGIN_LINK_SECONDS."""
    ttl = settings.WPFLEET_LOGIN_LINK_SECONDS
    infra = infra or Infra()
    if site.status == Site.Status.ACTIVE:
        # The link needs the plugin: put it back if the site's owner removed it.
        install_plugins(infra.docker, site.names)
    result = _run(site, LOGIN_TOKEN_PHP, infra, {"WPFLEET_TTL": str(ttl)})
    log.info("site %s: one-click login link made (valid %d s)", site.name, ttl)
    return LoginLink(
        # On the name WordPress calls home: its login cookie is for that host.
        url=f"https://{_home(site)}/wp-login.php?wpfleet_login={result['token']}",
        expires_at=datetime.fromtimestamp(int(result["expires"]), tz=UTC),
    )
