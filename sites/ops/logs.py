"""A site's latest log lines, as its containers wrote them, for operators.

``nginx``: the site's nginx container (its access log on stdout, its error
log on stderr); ``php``: the site's PHP-FPM container (PHP's errors and
FPM's access log, on stderr). Read through the engine (docker logs), each
line after its timestamp, with the site's secrets redacted.

Requests carrying a one-click login link are not in nginx's access log
(sites.provisioning.templates), and PHP-FPM's access log writes no query
string (its default format). Should a link's value, or a WordPress
password-reset key, reach a log another way (a plugin, a PHP warning that
quotes the URL, another log format), it is redacted here: a link is a
credential until it is used.
"""

from __future__ import annotations

import re
from typing import Protocol

from django.conf import settings

from jobs.redaction import redact
from sites.infra.docker_host import DockerHost
from sites.models import Site

SOURCES = ("nginx", "php")


class LogSource(Protocol):
    """What reading logs asks the engine (sites.infra.docker_host.DockerHost)."""

    def logs(self, name: str, tail: int, labels: dict[str, str] | None = None) -> str: ...


# Query parameters whose value is a credential: the panel's one-click login
# link (sites.ops.wordpress) and WordPress's password-reset and
# confirm-action keys (wp-login.php?action=rp&key=...).
_CREDENTIAL_PARAMETERS = re.compile(r"([?&;](?:wpfleet_login|key|confirm_key)=)[^&\s\"']+", re.IGNORECASE)


def site_logs(site: Site, source: str, lines: int, *, docker: LogSource | None = None) -> list[str]:
    """The latest ``lines`` lines (1..WPFLEET_LOG_LINES_MAX) of the site's ``nginx`` or ``php`` container, oldest first.

    Each line starts with its RFC 3339 timestamp. Raises ValueError for an
    unknown source or a number of lines out of bounds, InfraError when the
    engine cannot give them (the engine down, a foreign container of that
    name); no lines when the container does not exist (yet).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    maximum = settings.WPFLEET_LOG_LINES_MAX
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= maximum:
        raise ValueError(f"lines must be a whole number from 1 to {maximum}, not {lines!r}")
    container = site.names.nginx if source == "nginx" else site.names.php
    # Ours only; none yet (a site being built): no lines.
    text = (docker or DockerHost()).logs(container, lines, labels=site.names.labels(source))
    secrets = site.secrets()
    # Docker writes one entry per line; other line breaks (\r, U+2028) stay inside their entry.
    entries = text.split("\n")
    if entries and entries[-1] == "":
        entries.pop()
    return [redact(scrub(entry.rstrip("\r")), secrets) for entry in entries[-lines:]]


def scrub(line: str) -> str:
    """A log line with the values of credential query parameters replaced."""
    return _CREDENTIAL_PARAMETERS.sub(r"\1[redacted]", line)
