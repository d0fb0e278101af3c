"""A site's PHP-FPM lives in its nginx's network namespace: what keeps it there, and what moves older sites in.

And under its nginx's containerd shim: the lab's engine finds the shim wrapper
of lab/shim/ first (lab/up.sh), which groups a container with the one whose
network namespace it joins when both are the same site's.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings

from sites.models import Site
from sites.ops.reconcile import reconcile_all
from sites.provisioning.handlers import site_context
from sites.provisioning.steps import PHP_TMPFS, WWW_DATA, PhpStep, php_environment, php_mounts, php_tmp
from sites.provisioning.templates import php_ini, php_pool_config
from sites.services import change_settings, resume_site, suspend_site
from tests.integration.conftest import SHARED_COMPILED_CORE, fetch, wait_for
from tests.integration.test_day_two import run

pytestmark = pytest.mark.integration

# The host pattern of the sites' accounts before PHP shared nginx's address:
# the engine's default pool, where each site's own network was.
FORMER_ACCOUNT_HOST = "10.200.0.0/255.255.0.0"


def serves(site: Site) -> bool:
    answer = fetch(site.name, "/", timeout=10)
    return answer.status_code == 200 and "WordPress" in answer.text


def make_it_the_older_shape(infra, site: Site) -> None:
    """Rebuild the site as wpfleet made sites before: PHP-FPM on a network of the
    site's own (listening on every address there), nginx on it and on the shard,
    passing to PHP by name, and the database account at the engine's pool."""
    n, docker = site.names, infra.docker
    ctx = site_context(site, infra)
    docker.ensure_network(n.legacy_network, n.labels("network"))
    nginx = docker.container(n.nginx)
    docker.client.networks.get(n.legacy_network).connect(nginx)
    docker.remove_container(n.php, n.labels("php"))
    php = docker.client.containers.create(
        ctx.php_image,
        name=n.php,
        labels=n.labels("php"),
        environment=php_environment(n),
        mounts=php_mounts(n, php_tmp(ctx)),
        tmpfs=dict(PHP_TMPFS),
        network=n.legacy_network,
        hostname=n.php,
        cap_drop=["ALL"],
        cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"],
        restart_policy={"Name": "unless-stopped"},
    )
    older_pool = "".join(line + "\n" for line in php_pool_config().splitlines() if not line.startswith("listen"))
    docker.put_files(
        php,
        "/usr/local/etc",
        {
            "php-fpm.d/zz-wpfleet.conf": (older_pool.encode(), 0o644, 0, 0),
            "php/conf.d/zz-wpfleet.ini": (php_ini(values=ctx.php_values).encode(), 0o644, 0, 0),
        },
    )
    docker.put_files(
        php, "/run", {"secrets/wordpress_db_password": (site.db_password.encode(), 0o400, WWW_DATA, WWW_DATA)}
    )
    php.start()
    block = docker.read_file(n.nginx, n.nginx_config)
    docker.put_files(
        nginx,
        "/etc/nginx/conf.d",
        {"default.conf": (block.replace("127.0.0.1:9000", f"{n.php}:9000").encode(), 0o644, 0, 0)},
    )
    assert docker.exec(nginx, ["nginx", "-s", "reload"])[0] == 0
    # Its account as it was: at the engine's pool only, recorded as the site's.
    infra.db.ensure_site_database(
        site.name,
        n.database,
        n.db_user,
        FORMER_ACCOUNT_HOST,
        site.db_password,
        settings.WPFLEET_DB_MAX_USER_CONNECTIONS,
    )
    assert infra.db.drop_site_user(site.name, n.db_user, settings.WPFLEET_DB_USER_HOST) is None


def test_a_site_of_the_older_shape_is_moved_into_its_nginxs_namespace_by_a_reconcile_pass(make_site, infra, settings):
    settings.WPFLEET_RECONCILE_DEEP_CHECKS = 0
    site, bystander = make_site(), make_site()
    reconcile_all(infra)
    make_it_the_older_shape(infra, site)
    assert serves(site), "the older shape serves before the pass"
    n = site.names

    repaired = reconcile_all(infra)

    assert set(repaired) == {site.name}
    assert any(f"not in {n.nginx}'s network namespace" in line for line in repaired[site.name]), repaired
    assert serves(site) and serves(bystander)
    nginx, php = infra.docker.container(n.nginx), infra.docker.container(n.php)
    assert php.attrs["HostConfig"]["NetworkMode"] == f"container:{nginx.id}"
    assert set(nginx.attrs["NetworkSettings"]["Networks"]) == {Site.objects.get(pk=site.pk).backend_network}
    assert infra.docker.network(n.legacy_network) is None
    # Its account follows the setting: made at the current pattern, the former one dropped.
    assert infra.db.user_hosts(n.db_user) == [settings.WPFLEET_DB_USER_HOST]
    assert reconcile_all(infra) == {}, "nothing left to repair"


def test_php_rejoins_its_nginx_after_nginx_alone_restarted(make_site, infra, settings):
    settings.WPFLEET_RECONCILE_DEEP_CHECKS = 0  # no site read for real: the listing must show it
    site = make_site()
    reconcile_all(infra)
    infra.docker.restart(infra.docker.container(site.names.nginx))
    # nginx has a new network namespace; PHP-FPM is still in the one nginx left
    # (a query string: past the page cache, to PHP).
    answer = fetch(site.name, "/?s=anything", timeout=10)
    assert answer.status_code == 502, answer.status_code

    repaired = reconcile_all(infra)

    assert any(f"started before {site.names.nginx} last did" in line for line in repaired[site.name]), repaired
    assert fetch(site.name, "/?s=anything", timeout=10).status_code == 200
    assert reconcile_all(infra) == {}, "nothing left to repair"


def tmp_of(container) -> tuple[str, str]:
    """How the container's /tmp is mounted: ("bind", the host's directory) or ("volume", its name)."""
    container.reload()
    mount = next(m for m in container.attrs["Mounts"] if m["Destination"] == "/tmp")
    return mount["Type"], mount.get("Name") or mount["Source"]


def php_serves(site: Site) -> bool:
    answer = fetch(site.name, "/wp-login.php", timeout=10)  # never from the page cache: PHP answers
    return answer.status_code == 200 and "user_login" in answer.text


@pytest.mark.skipif(
    not SHARED_COMPILED_CORE, reason="the compiled core is shared on a host with quotas and opcache's file cache"
)
def test_a_site_made_before_the_shared_compiled_core_gets_its_overlay_from_a_pass_and_uses_it_from_its_next_php(
    make_site, infra, settings
):
    settings.WPFLEET_RECONCILE_DEEP_CHECKS = 0
    site = make_site()
    n, docker = site.names, infra.docker
    reconcile_all(infra)
    # As such a site was: no overlay volume, its PHP's /tmp the site's tmp/ itself.
    docker.remove_container(n.php, n.labels("php"))
    assert docker.remove_volume(n.tmp_volume, n.labels("tmp")) is None
    PhpStep().apply(site_context(site, infra))
    assert tmp_of(docker.container(n.php)) == ("bind", f"{settings.WPFLEET_QUOTA_ROOT}/{site.name}/tmp")
    wait_for(lambda: php_serves(site), timeout=30, interval=1, message=f"{site.name}'s new PHP to answer")

    repaired = reconcile_all(infra)

    assert any(n.tmp_volume in line for line in repaired[site.name]), repaired
    assert docker.volume(n.tmp_volume) is not None
    assert tmp_of(docker.container(n.php))[0] == "bind", "a running PHP keeps its mounts"
    assert php_serves(site)
    assert reconcile_all(infra) == {}, "nothing left to repair"
    # Its next PHP container (here a PHP switch) mounts the overlay.
    run(change_settings(Site.objects.get(pk=site.pk), {"php_version": "8.4"}))
    assert tmp_of(docker.container(n.php)) == ("volume", n.tmp_volume)
    assert php_serves(site)


def shim_of(container) -> int:
    """The pid of the containerd shim that runs this container (the parent of its first process)."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    assert pid, f"{container.name} is not running"
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_sites_php_runs_under_its_nginxs_shim_after_a_php_switch_a_resume_and_a_repair(make_site, infra, settings):
    settings.WPFLEET_RECONCILE_DEEP_CHECKS = 0
    site = make_site()
    n, docker = site.names, infra.docker
    assert shim_of(docker.container(n.php)) == shim_of(docker.container(n.nginx))

    run(change_settings(site, {"php_version": "8.4"}))  # a new PHP container, then renamed
    assert shim_of(docker.container(n.php)) == shim_of(docker.container(n.nginx))
    run(suspend_site(Site.objects.get(pk=site.pk)))
    run(resume_site(Site.objects.get(pk=site.pk)))
    nginx = docker.container(n.nginx)
    assert shim_of(docker.container(n.php)) == shim_of(nginx)

    # nginx restarted alone: the repair starts PHP into its new namespace, under its shim again.
    docker.restart(nginx)
    assert site.name in reconcile_all(infra)
    assert shim_of(docker.container(n.php)) == shim_of(docker.container(n.nginx))
    assert serves(site)


def test_a_container_of_another_site_or_no_owner_joining_a_sites_namespace_keeps_its_own_shim(make_site, infra):
    site = make_site()
    n, docker = site.names, infra.docker
    nginx = docker.container(n.nginx)
    others = {
        "another site's": {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.site": "someone-else"},
        "no owner's": {},
    }
    made = []
    try:
        for whose, labels in others.items():
            guest = docker.client.containers.run(
                settings.WPFLEET_NGINX_IMAGE,
                ["sleep", "300"],
                name=f"wpfleet-test-guest-{uuid.uuid4().hex[:8]}",
                labels=labels,
                network_mode=f"container:{nginx.id}",
                entrypoint=[],
                detach=True,
            )
            made.append(guest)
            assert shim_of(guest) != shim_of(nginx), f"a container of {whose} joined the site's shim"
    finally:
        for guest in made:
            guest.remove(force=True)
    assert shim_of(docker.container(n.php)) == shim_of(nginx)
