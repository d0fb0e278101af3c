"""On the real lab: suspend and resume, a PHP version switch under load, php.ini settings (issue #13).

Each change is a job run as the worker runs it (``run_to_end``); every
request goes through Caddy over HTTPS, as a visitor's would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from jobs.models import Job
from sites.models import Site
from sites.ops.reconcile import reconcile_all
from sites.services import change_settings, resume_site, suspend_site
from tests.integration.conftest import fetch, fetch_plain_http, run_to_end
from tests.integration.test_page_cache import wordpress
from tests.integration.test_provisioning import Prober

pytestmark = [pytest.mark.integration]


def run(job: Job | None) -> Job:
    assert job is not None, "the change opened no job"
    done = run_to_end(job.pk)
    assert done.status == Job.Status.DONE, done.error
    return done


def memory_cgroup(container) -> Path:
    """Where cgroup v1 accounts a running container's memory (gone once it stops)."""
    return Path("/sys/fs/cgroup/memory/docker") / container.id


def set_tagline(infra, site: Site, tagline: str) -> None:
    wordpress(infra, site, "update_option('blogdescription', getenv('TAGLINE'));", TAGLINE=tagline)


def test_a_suspended_site_frees_its_memory_answers_503_and_resumes_with_its_content(make_site, infra):
    site = make_site()
    set_tagline(infra, site, "kept through a suspension")
    containers = [infra.docker.container(name) for name in (site.names.php, site.names.nginx)]
    assert all(memory_cgroup(c).is_dir() for c in containers), "the running containers have a memory cgroup"

    run(suspend_site(site))

    site.refresh_from_db()
    assert site.status == Site.Status.SUSPENDED
    for container in containers:
        container.reload()
        assert container.status == "exited", container.status
        assert not memory_cgroup(container).exists(), "a stopped container's memory is freed"
    page = fetch(site.name, "/")
    assert page.status_code == 503
    assert "suspended" in page.text
    assert fetch_plain_http(site.name, "/").status_code == 308, "plain HTTP still redirects to https"
    # The route, the database and the files are kept.
    assert infra.caddy.route_owner(site.domain) == site.name
    assert infra.docker.volume(site.names.volume) is not None

    # A reconcile pass (the worker's, run here) leaves a suspended site stopped.
    assert site.name not in reconcile_all(infra)
    assert infra.docker.container(site.names.php).status == "exited"

    run(resume_site(site))

    site.refresh_from_db()
    assert site.status == Site.Status.ACTIVE
    page = fetch(site.name, "/")
    assert page.status_code == 200
    assert "kept through a suspension" in page.text


def test_suspend_and_resume_refuse_a_site_in_the_wrong_state(make_site):
    from sites.services import SiteNotActive

    site = make_site()
    with pytest.raises(SiteNotActive):
        resume_site(site)
    run(suspend_site(site))
    with pytest.raises(SiteNotActive):
        suspend_site(site)
    with pytest.raises(SiteNotActive):
        change_settings(site, {"page_cache": False})
    run(resume_site(site))


@pytest.mark.skipif("8.4" not in settings.WPFLEET_PHP_VERSIONS, reason="the lab offers no PHP 8.4 image")
def test_a_php_version_switch_under_a_probe_fails_no_request_and_runs_the_new_image(make_site, infra):
    site = make_site()
    assert site.php_version == settings.WPFLEET_PHP_DEFAULT_VERSION != "8.4"
    old = infra.docker.container(site.names.php)

    with Prober(site.name) as probe:
        run(change_settings(site, {"php_version": "8.4"}))
        # Keep probing the new container for a moment after the job ended.
        probe.stop.wait(1.0)

    assert probe.failures == [], probe.failures
    assert probe.requests > 10, f"only {probe.requests} requests during the switch"
    new = infra.docker.container(site.names.php)
    assert new.id != old.id
    assert new.attrs["Config"]["Image"] == settings.WPFLEET_PHP_VERSIONS["8.4"]
    code, version = infra.docker.exec(new, ["php", "-r", "echo PHP_VERSION;"])
    assert code == 0 and version.startswith("8.4."), version
    assert infra.docker.container(site.names.php_next) is None
    assert infra.docker.container(old.id) is None, "the old container is removed"
    site.refresh_from_db()
    assert site.php_version == "8.4"
    assert fetch(site.name, "/").status_code == 200


def test_php_settings_reach_php_fpm_and_nginx(make_site, infra, api):
    site = make_site()
    wanted = {"memory_limit": "300M", "upload_max_filesize": "20M", "post_max_size": "24M", "max_execution_time": 45}

    answer = api.patch(f"/api/sites/{site.name}", {"php": wanted}, format="json")
    assert answer.status_code == 202, answer.content
    run(Job.objects.get(pk=answer.json()["job"]["id"]))

    # What php-fpm itself runs with: a script of the test's, requested through Caddy.
    probe = "/var/www/html/wpfleet-ini-probe.php"
    script = "<?php foreach (['memory_limit','upload_max_filesize','post_max_size','max_execution_time'] as $k) { echo $k, '=', ini_get($k), \"\\n\"; }"
    container = infra.docker.container(site.names.php)
    code, _ = infra.docker.exec(
        container, ["sh", "-c", f'printf "%s" "$PROBE" > {probe}'], user="www-data", environment={"PROBE": script}
    )
    assert code == 0
    served = fetch(site.name, "/wpfleet-ini-probe.php?x=1").text
    for key, value in wanted.items():
        assert f"{key}={value}" in served, served
    # And phpinfo, read inside the container (the CLI reads the same ini files).
    code, info = infra.docker.exec(container, ["php", "-i"])
    assert "memory_limit => 300M => 300M" in info
    # nginx takes bodies up to post_max_size.
    block = infra.docker.read_file(site.names.nginx, site.names.nginx_config)
    assert "client_max_body_size 24M;" in block
    shown = api.get(f"/api/sites/{site.name}").json()
    assert shown["php"] == wanted


@pytest.mark.skipif(not settings.WPFLEET_QUOTA_ROOT, reason="this host has no quota filesystem")
def test_a_site_cannot_write_past_its_quota_while_a_bystander_keeps_serving(make_site, infra):
    from sites.services import QuotaTooSmall

    site, bystander = make_site(), make_site()
    run(change_settings(site, {"disk_quota": "300M"}))
    site.refresh_from_db()
    assert site.disk_quota == 300 * 1024**2
    assert infra.quotas.usage(site.name)[1] == 300 * 1024**2

    def write(target: Site, path: str, megabytes: int) -> tuple[int, str]:
        return infra.docker.exec(
            target.names.php,
            ["sh", "-c", f"dd if=/dev/zero of={path} bs=1M count={megabytes} conv=fsync 2>&1"],
            user="www-data",
        )

    code, output = write(site, "/var/www/html/wp-content/uploads/big.bin", 400)
    assert code != 0 and "quota" in output.lower(), output
    # /tmp (uploads in progress) counts against the same quota: no way around it.
    code, output = write(site, "/tmp/big.bin", 400)
    assert code != 0 and "quota" in output.lower(), output
    # Nor is the container's own filesystem a way around it: nothing else is writable there.
    # (find -xdev lists a mount point, not what is under it: the mounts are
    # the site's quota directories and small tmpfs, so they are left out.)
    code, output = infra.docker.exec(
        site.names.php,
        ["sh", "-c", "find / -xdev -type d -writable ! -path '/proc/*' 2>/dev/null"],
        user="www-data",
    )
    _, mounts = infra.docker.exec(site.names.php, ["sh", "-c", "cut -d' ' -f2 /proc/self/mounts"])
    in_layer = sorted(set(output.split()) - set(mounts.split()))
    assert in_layer == [], f"writable in the container's layer, outside the site's quota: {in_layer}"
    # The bystander serves and writes as before.
    assert fetch(bystander.name, "/").status_code == 200
    code, output = write(bystander, "/var/www/html/wp-content/uploads/small.bin", 5)
    assert code == 0, output
    # A quota below what the files use now is refused, and nothing changes.
    with pytest.raises(QuotaTooSmall):
        change_settings(site, {"disk_quota": "256M"})
    site.refresh_from_db()
    assert site.current_job_id is None and site.disk_quota == 300 * 1024**2


def test_a_php_switch_that_fails_goes_back_to_the_old_container_and_the_site_serves_throughout(
    make_site, infra, settings
):
    site = make_site()
    old = infra.docker.container(site.names.php)
    # An offered version whose image is not on the host: the new container cannot be made.
    settings.WPFLEET_PHP_VERSIONS = {**settings.WPFLEET_PHP_VERSIONS, "9.9": "wpfleet-lab/wordpress:no-such-image"}

    with Prober(site.name) as probe:
        failed = run_to_end(change_settings(site, {"php_version": "9.9"}).pk)

    assert failed.status == Job.Status.FAILED
    assert failed.attempts == 1, "a missing image is no passing trouble: not retried"
    assert "no-such-image" in failed.error
    assert probe.failures == [], probe.failures
    assert infra.docker.container(site.names.php).id == old.id
    assert infra.docker.container(site.names.php_next) is None
    site.refresh_from_db()
    assert (site.php_version, site.current_job_id) == (settings.WPFLEET_PHP_DEFAULT_VERSION, None)
    assert fetch(site.name, "/").status_code == 200
