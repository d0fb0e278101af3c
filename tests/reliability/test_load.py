"""Many sites at once, and a bystander site that never notices."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.models import Job
from jobs.runner import run_job
from sites.models import Site
from sites.provisioning.steps import STEP_NAMES
from sites.services import SiteBusy, create_site, delete_site
from tests.conftest import unique_name
from tests.integration.conftest import fetch, force_remove, leftovers, start_cluster, stop_cluster, wait_for
from tests.integration.test_provisioning import Prober

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(900)]


def test_twenty_sites_posted_at_once_all_go_live_while_a_bystander_keeps_serving(
    api, make_site, infra, settings, transactional_db
):
    bystander = make_site(unique_name("by"))
    assert bystander.status == Site.Status.ACTIVE
    names = [unique_name("c") for _ in range(20)]
    cluster = start_cluster(WPFLEET_WORKERS="4")
    try:
        with Prober(bystander.name) as prober:
            with ThreadPoolExecutor(max_workers=20) as pool:
                statuses = list(pool.map(lambda name: api.post("/api/sites", {"site": name}).status_code, names))
            assert statuses == [202] * 20

            # Meanwhile, in this process: sites that fail at each step and roll back.
            settings.WPFLEET_RETRY_BACKOFF_SECONDS = 0.05
            failed = []
            for step in STEP_NAMES:
                settings.WPFLEET_FAULTS = (step,)
                site = create_site(unique_name("f"))
                failed.append(site.name)
                Job.objects.filter(pk=site.current_job_id).update(max_attempts=1)
                run_job(site.current_job_id)
            settings.WPFLEET_FAULTS = ()

            def all_final():
                jobs = Job.objects.filter(subject_name__in=names)
                return jobs.count() == 20 and all(job.is_final for job in jobs)

            wait_for(all_final, timeout=600, interval=0.5, message="20 concurrent sites to finish")
            not_active = list(
                Site.objects.filter(name__in=names)
                .exclude(status=Site.Status.ACTIVE)
                .values_list("name", "last_job__error")
            )
            assert not_active == []
            # Every one answers over HTTPS through Caddy, with nothing reloaded.
            # How fast is the machine's business, not this test's: on two cores
            # busy with the twenty sites' first cron runs, one answer once took
            # more than fetch's default 10 s.
            answers = {name: fetch(name, timeout=60).status_code for name in names}
            assert answers == {name: 200 for name in names}

            # And they all go away again. A site the reconciler is checking
            # refuses a job for that moment (409 busy): ask again, as a client would.
            def delete_all_not_busy() -> bool:
                for site in Site.objects.filter(name__in=names, current_job__isnull=True):
                    try:
                        delete_site(site)
                    except SiteBusy:
                        pass
                return not Site.objects.filter(name__in=names, current_job__isnull=True).exists()

            wait_for(delete_all_not_busy, timeout=120, interval=0.5, message="every delete accepted")
            wait_for(
                lambda: not Site.objects.filter(name__in=names).exists(), timeout=600, interval=0.5, message="deletes"
            )
        for name in names + failed:
            assert leftovers(infra, name) == [], name
        print(f"\nbystander: {prober.requests} requests, {len(prober.failures)} failed")
        # How many requests fit depends on the machine's speed; that none failed does not.
        assert prober.requests > 0 and prober.failures == []
    finally:
        stop_cluster(cluster)
        for name in names:
            force_remove(infra, name)
