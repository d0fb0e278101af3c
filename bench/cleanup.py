"""Removing what the bench created: its sites, their rows, the filler route files.

The normal path deletes sites through the API (the workers deprovision them).
This module is the other path, for what is left after a failure or a Ctrl-C:
it runs the provisioner's own undo in this process, keyed on the site names
and on the bench's owner label, so it can never touch a site of a panel or a
test run (they carry other owners).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bench import config

# Names of the sites this run has posted and not yet seen deleted.
REGISTRY: set[str] = set()

# First line of every filler route file (bench/sections/fill.py). A panel's
# routes are "# wpfleet owner=<its owner> site=<site>": this marker names the
# filler owner, so no panel (the bench's own included) takes a filler for a site.
FILLER_MARKER = f"# wpfleet owner={config.FILLER_OWNER} site="


def force_remove(names: list[str] | set[str]) -> dict:
    """Undo every step of each site in this process (four at a time), then drop its row."""
    from sites.models import Site
    from sites.provisioning.orchestrator import Provisioner
    from sites.provisioning.steps import Infra

    infra = Infra()
    errors: dict[str, str] = {}

    def remove(name: str) -> None:
        try:
            Provisioner(name, "", infra=infra).deprovision()
        except Exception as exc:  # keep going: one stuck site must not leak the others
            errors[name] = str(exc)[:300]

    names = sorted(names)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(remove, names))
    removed = [name for name in names if name not in errors]
    Site.objects.filter(name__in=removed).delete()
    REGISTRY.difference_update(removed)
    return {"removed": removed, "errors": errors}


def owned_site_names() -> set[str]:
    """Sites with anything labelled or commented as the bench's: containers, volumes, networks, databases, routes."""
    from sites.ops.cleanup import sites_with_resources
    from sites.provisioning.steps import Infra

    return sites_with_resources(Infra())


def remove_fillers() -> int:
    """Delete the filler route files (one exec; only files carrying the filler marker). Returns how many."""
    from sites.provisioning.steps import Infra

    caddy = Infra().caddy
    # Only files that carry the filler marker: the routes directory holds the
    # routes of every panel on the host (Caddy sees a deletion at the next request).
    script = (
        'files=$(find "$2" -maxdepth 1 -type f -name "$3*" -exec grep -lF -- "$1" {} +); '
        '[ -z "$files" ] || echo "$files" | xargs rm -f; echo "$files"'
    )
    code, output = caddy.docker.exec(
        caddy.container_name,
        ["sh", "-c", script, "sh", FILLER_MARKER, caddy.routes_dir, config.FILLER_PREFIX],
    )
    if code != 0:
        raise RuntimeError(f"removing filler routes failed ({code}): {output[-300:]}")
    return len([line for line in output.splitlines() if line.startswith(caddy.routes_dir + "/")])


def sweep(reason: str) -> dict:
    """Everything of the bench's, whatever state it is in: fillers, then every owned site, rows, empty shards."""
    from sites.models import Site

    report: dict = {"reason": reason}
    try:
        report["fillers_removed"] = remove_fillers()
    except Exception as exc:
        report["fillers_error"] = str(exc)[:300]
    try:
        names = owned_site_names() | REGISTRY | set(Site.objects.values_list("name", flat=True))
    except Exception as exc:
        report["discovery_error"] = str(exc)[:300]
        names = set(REGISTRY)
    report["sites"] = len(names)
    if names:
        report.update(force_remove(names))
    Site.objects.all().delete()
    try:
        from sites.provisioning.shards import retire_empty_shards
        from sites.provisioning.steps import Infra

        report["shards_removed"] = retire_empty_shards(Infra())
    except Exception as exc:
        report["shards_error"] = str(exc)[:300]
    return report
