"""The provisioning flow end to end, on the real lab."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from jobs.models import Job
from jobs.runner import run_job
from sites.models import Site
from sites.provisioning.steps import STEP_NAMES
from sites.provisioning.templates import PAGE_CACHE_MOUNT
from sites.services import delete_site
from tests.conftest import unique_name
from tests.integration.conftest import SHARED_COMPILED_CORE, fetch, leftovers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_post_to_active_serves_wordpress_through_caddy_then_delete_leaves_nothing(api, infra, worker_cluster):
    name = unique_name("e2e")
    started = time.monotonic()
    response = api.post("/api/sites", {"site": name})
    assert response.status_code == 202, response.content

    def active():
        body = api.get(f"/api/sites/{name}").json()
        assert body["job"]["status"] != "FAILED" or body["job"]["attempts"] < body["job"]["max_attempts"], body
        return body["status"] == "ACTIVE" and body

    body = wait_for(active, timeout=180, message=f"{name} ACTIVE")
    elapsed = time.monotonic() - started
    print(f"\nPOST to ACTIVE for {name}: {elapsed:.2f}s")
    assert body["job"]["status"] == "DONE"

    install = fetch(name)
    assert install.status_code == 200
    assert "WordPress" in install.text
    css = fetch(name, "/wp-includes/css/dashicons.min.css")
    assert css.status_code == 200
    assert css.headers["Content-Type"].startswith("text/css")
    # nginx answered the static file itself: PHP-FPM would have no reason to.
    assert "nginx" in css.headers.get("Server", "")

    job = api.get(f"/api/jobs/{body['job']['id']}").json()
    assert sorted(step["name"] for step in job["steps"]) == sorted(STEP_NAMES)
    assert all(step["outcome"] == "OK" for step in job["steps"])

    assert api.delete(f"/api/sites/{name}").status_code == 202
    wait_for(lambda: api.get(f"/api/sites/{name}").status_code == 404, timeout=120, message=f"{name} deleted")
    assert leftovers(infra, name) == []
    assert fetch(name).status_code == 404
    assert Job.objects.filter(subject_name=name, type=Site.JobType.DEPROVISION, status=Job.Status.DONE).count() == 1


def test_site_resources_follow_the_seed(make_site, infra):
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    names = site.names
    php = infra.docker.container(names.php)
    nginx = infra.docker.container(names.nginx)
    php_host, nginx_host = php.attrs["HostConfig"], nginx.attrs["HostConfig"]

    assert php.attrs["Config"]["Image"] == settings.WPFLEET_PHP_IMAGE
    assert (php_host["Memory"], php_host["NanoCpus"], php_host["PidsLimit"]) == (512 * 1024**2, 10**9, 100)
    assert (nginx_host["Memory"], nginx_host["NanoCpus"], nginx_host["PidsLimit"]) == (128 * 1024**2, 5 * 10**8, 50)
    assert php_host["MemorySwap"] == php_host["Memory"] and nginx_host["MemorySwap"] == nginx_host["Memory"]
    # The engine restarts nginx by itself; PHP only wpfleet starts, nginx first (steps.PHP_RESTART_POLICY).
    assert nginx_host["RestartPolicy"]["Name"] == "unless-stopped"
    assert php_host["RestartPolicy"]["Name"] == "no"
    assert "no-new-privileges:true" in php_host["SecurityOpt"]
    # (a bind mount has a Source, not a Name)
    mounts = {
        c.name: {(m.get("Name") or m["Source"], m["Destination"], m["RW"]) for m in c.attrs["Mounts"]}
        for c in (php, nginx)
    }
    assert (names.volume, "/var/www/html", True) in mounts[names.php]
    if settings.WPFLEET_QUOTA_ROOT:
        # PHP's /tmp is the site's, inside its quota, like its files and its page cache:
        # its tmp/, the upper layer of an overlay over the image's compiled WordPress.
        assert (names.tmp_volume, "/tmp", True) in mounts[names.php]
        layers = dict(o.split("=", 1) for o in infra.docker.volume(names.tmp_volume).attrs["Options"]["o"].split(","))
        assert layers["upperdir"] == f"{settings.WPFLEET_QUOTA_ROOT}/{site.name}/tmp"
        assert layers["workdir"] == f"{settings.WPFLEET_QUOTA_ROOT}/{site.name}/work"
        for volume in (names.volume, names.cache_volume):
            options = infra.docker.volume(volume).attrs["Options"]
            assert options["device"].startswith(f"{settings.WPFLEET_QUOTA_ROOT}/{site.name}/"), options
    # nginx reads the site's files, and writes only its page cache (which the site's PHP purges).
    assert mounts[names.nginx] == {(names.volume, "/var/www/html", False), (names.cache_volume, PAGE_CACHE_MOUNT, True)}
    assert (names.cache_volume, PAGE_CACHE_MOUNT, True) in mounts[names.php]
    # nginx faces Caddy on the backend shard recorded for the site
    # (sites.provisioning.shards), and nothing else; PHP-FPM has no network
    # of its own: it shares nginx's namespace, and listens on its loopback.
    backend = Site.objects.get(pk=site.pk).backend_network
    assert backend and set(nginx.attrs["NetworkSettings"]["Networks"]) == {backend}
    assert php.attrs["HostConfig"]["NetworkMode"] == f"container:{nginx.id}"
    assert infra.docker.network(names.legacy_network) is None
    for container in (php, nginx):
        assert container.labels["wpfleet.site"] == site.name
        assert container.labels["wpfleet.owner"] == settings.WPFLEET_OWNER
    env = dict(item.split("=", 1) for item in php.attrs["Config"]["Env"])
    assert env["WORDPRESS_DB_USER"] == env["WORDPRESS_DB_NAME"] == names.database
    assert env["WORDPRESS_DB_HOST"] == settings.WPFLEET_SITE_DB_HOST
    # The password reaches WordPress through a file, never the environment.
    assert site.db_password not in " ".join(php.attrs["Config"]["Env"])
    assert "WORDPRESS_DB_PASSWORD" not in env
    # Caddy reaches nginx by the site's hostname, and routes that hostname to it by a file of ours.
    aliases = nginx.attrs["NetworkSettings"]["Networks"][backend]["Aliases"]
    assert f"{site.domain}.wpfleet.invalid" in aliases
    assert infra.caddy.routes()[site.domain] == site.name


def lower_layer(infra, site: Site) -> str:
    options = infra.docker.volume(site.names.tmp_volume).attrs["Options"]["o"]
    return dict(o.split("=", 1) for o in options.split(","))["lowerdir"]


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.skipif(
    not SHARED_COMPILED_CORE, reason="the compiled core is shared on a host with quotas and opcache's file cache"
)
def test_sites_read_one_shared_compiled_wordpress_that_none_of_them_can_change(make_site, infra):
    first, second = make_site(), make_site()
    for site in (first, second):
        assert site.status == Site.Status.ACTIVE, site.last_job.error
        assert fetch(site.name).status_code == 200
    shared = lower_layer(infra, first)
    assert lower_layer(infra, second) == shared
    # WordPress's bootstrap, compiled: where PHP looks for it (/tmp/<system id>/<path>.bin).
    code, found = infra.docker.exec(first.names.php, ["sh", "-c", "ls -d /tmp/*/var/www/html/wp-settings.php.bin"])
    assert code == 0, found
    compiled = found.strip().removeprefix("/tmp/")
    before = digest(f"{shared}/{compiled}")
    quota_root = settings.WPFLEET_QUOTA_ROOT
    for site in (first, second):
        # Served from the shared layer: no site holds a copy of its own.
        assert not Path(f"{quota_root}/{site.name}/tmp/{compiled}").exists()

    # The first site's PHP overwrites its compiled bootstrap: a copy of its own, in its own tmp/ (its quota).
    code, output = infra.docker.exec(first.names.php, ["sh", "-c", f"echo tampered > /tmp/{compiled}"], user="www-data")
    assert code == 0, output
    assert Path(f"{quota_root}/{first.name}/tmp/{compiled}").read_text() == "tampered\n"
    assert digest(f"{shared}/{compiled}") == before
    assert not Path(f"{quota_root}/{second.name}/tmp/{compiled}").exists()
    # Opcache refuses the damaged copy and compiles again; both sites' PHP serves (no page cache for the login).
    for site in (first, second):
        answer = fetch(site.name, "/wp-login.php")
        assert answer.status_code == 200 and "user_login" in answer.text


@pytest.fixture
def bystander(make_site):
    """An ACTIVE site that must keep answering while others are built, broken and removed."""
    site = make_site(unique_name("by"))
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    return site


class Prober(threading.Thread):
    """Requests a site through Caddy in a loop and counts what did not answer 200.

    A slow answer on a saturated two-core host is not a failure; an error,
    a refused connection or a non-200 answer is.
    """

    def __init__(self, name: str):
        super().__init__(daemon=True)
        self.name_ = name
        self.stop = threading.Event()
        self.requests = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = fetch(self.name_, timeout=30).status_code
                if status != 200:
                    self.failures.append(f"HTTP {status}")
            except Exception as exc:
                # What failed and after how long: a connection cut by a reload's
                # grace period reads differently from a refused one.
                elapsed = time.monotonic() - started
                self.failures.append(f"{exc.__class__.__name__} after {elapsed:.1f} s: {exc}")
            self.requests += 1
            time.sleep(0.05)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)


@pytest.mark.parametrize("step", STEP_NAMES)
def test_a_fault_at_each_step_leaves_nothing_and_the_bystander_keeps_serving(
    step, make_site, bystander, infra, settings
):
    settings.WPFLEET_FAULTS = (step,)
    with Prober(bystander.name) as prober:
        site = make_site(max_attempts=1)
    assert site.status == Site.Status.PROVISIONING
    job = site.last_job
    assert job.status == Job.Status.FAILED and job.is_final
    assert f"step {step} failed: injected fault after {step}" in job.error
    assert job.traceback and "InjectedFault" in job.traceback
    assert site.is_zombie
    assert leftovers(infra, site.name) == []
    assert prober.requests > 0 and prober.failures == []
    assert fetch(bystander.name).status_code == 200


def test_failed_attempts_are_retried_and_a_later_attempt_succeeds(make_site, settings):
    settings.WPFLEET_FAULTS = ("nginx@1",)
    settings.WPFLEET_RETRY_BACKOFF_SECONDS = 0.1
    site = make_site(max_attempts=3)
    assert site.status == Site.Status.ACTIVE
    job = site.last_job
    assert job.status == Job.Status.DONE and job.attempts == 2
    first = job.steps.filter(attempt=1)
    assert first.filter(name="nginx", phase="apply", outcome="FAILED").exists()
    assert first.filter(name="database", phase="undo", outcome="UNDONE").exists()
    assert fetch(site.name).status_code == 200


def test_after_max_attempts_the_site_is_a_zombie_that_cleanup_clears(make_site, infra, settings, capsys):
    settings.WPFLEET_FAULTS = ("live_check",)
    settings.WPFLEET_RETRY_BACKOFF_SECONDS = 0.1
    site = make_site(max_attempts=2)
    assert site.is_zombie and site.last_job.attempts == 2
    call_command("cleanup_zombies", "--dry-run")
    assert f"would remove zombie site {site.name}" in capsys.readouterr().out
    assert Site.objects.filter(pk=site.pk).exists()
    call_command("cleanup_zombies")
    assert f"remove zombie site {site.name}" in capsys.readouterr().out
    assert not Site.objects.filter(pk=site.pk).exists()
    assert leftovers(infra, site.name) == []


def test_cleanup_removes_leftovers_of_sites_that_have_no_row(make_site, infra, capsys):
    site = make_site()
    assert site.status == Site.Status.ACTIVE
    Site.objects.filter(pk=site.pk).delete()  # as if the control database had lost it
    call_command("cleanup_zombies")
    assert f"remove leftovers of deleted site {site.name}" in capsys.readouterr().out
    assert leftovers(infra, site.name) == []


def test_a_foreign_container_with_our_name_is_left_untouched(make_site, infra, settings):
    name = unique_name("fx")
    foreign = infra.docker.client.containers.create(
        settings.WPFLEET_NGINX_IMAGE, name=f"nginx_{name}", labels={"someone": "else"}
    )
    try:
        site = make_site(name)
        job = site.last_job
        assert job.status == Job.Status.FAILED and job.attempts == 1, "a foreign name is not retried"
        assert f"nginx_{name}" in job.error and "left untouched" in job.error
        foreign.reload()  # raises if it was removed
        assert foreign.labels["someone"] == "else" and "wpfleet.owner" not in foreign.labels
        assert foreign.status == "created"
        assert leftovers(infra, name) == [f"nginx container nginx_{name} created, not wpfleet's"]
    finally:
        foreign.remove(force=True)


def test_php_fpm_answers_on_loopback_only_never_from_the_backend(make_site, infra):
    a, b = make_site(), make_site()
    assert a.status == b.status == Site.Status.ACTIVE
    backend = Site.objects.get(pk=b.pk).backend_network
    ip_a = infra.docker.container(a.names.nginx).attrs["NetworkSettings"]["Networks"][backend]["IPAddress"]
    ip_b = infra.docker.container(b.names.nginx).attrs["NetworkSettings"]["Networks"][backend]["IPAddress"]
    php_a = infra.docker.container(a.names.php)
    probe = (
        "foreach (array_slice($argv, 1) as $t) { [$h, $p] = explode(',', $t);"
        " $s = @fsockopen($h, (int) $p, $no, $err, 2); echo $t, ($s ? ' open' : ' closed'), PHP_EOL; }"
    )
    targets = [f"{ip}:{port}" for ip in (ip_b, ip_a) for port in (9000, 9001)]
    code, output = infra.docker.exec(
        php_a, ["php", "-r", probe, "--", *(t.replace(":", ",") for t in targets), "127.0.0.1,9000", f"{ip_b},80"]
    )
    # Another site's PHP-FPM, and this site's own, are closed from the backend shard they share...
    for target in targets:
        assert f"{target.replace(':', ',')} closed" in output, output
    # ...while the probe works: the site's own PHP-FPM answers on loopback, and another site's nginx on port 80.
    assert "127.0.0.1,9000 open" in output, output
    assert f"{ip_b},80 open" in output, output


def test_delete_through_the_service_removes_everything(make_site, infra):
    site = make_site()
    job = delete_site(site)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE
    assert not Site.objects.filter(pk=site.pk).exists()
    assert leftovers(infra, site.name) == []
