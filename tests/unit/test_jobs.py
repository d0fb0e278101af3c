"""Job and site life cycles: transitions guard themselves, claims are exclusive."""

import pytest

from jobs.models import Job
from sites.models import InvalidTransition, Site
from sites.services import SiteBusy, create_site, delete_site, retry_site

pytestmark = pytest.mark.django_db


def make_site(name="lifecycle") -> tuple[Site, Job]:
    site = create_site(name)
    return site, site.current_job


def test_a_job_is_claimed_once():
    _, job = make_site()
    first = Job.claim(job.pk, "worker-a")
    second = Job.claim(job.pk, "worker-b")
    assert first is not None and first.status == Job.Status.PROCESSING and first.attempts == 1
    assert second is None


def test_a_finished_job_cannot_be_finished_again():
    _, job = make_site()
    job = Job.claim(job.pk, "w")
    job.mark_done()
    with pytest.raises(InvalidTransition):
        job.mark_done()
    with pytest.raises(InvalidTransition):
        job.mark_failed("late")


def test_only_the_holder_can_finish_a_job():
    _, job = make_site()
    mine = Job.claim(job.pk, "w1")
    Job.objects.filter(pk=job.pk).update(worker="someone-else")
    with pytest.raises(InvalidTransition, match="no longer held"):
        mine.mark_done()


def test_failed_job_with_attempts_left_is_claimable_again_when_due():
    _, job = make_site()
    job = Job.claim(job.pk, "w")
    job.mark_failed("boom", retry_in=0)
    assert job.status == Job.Status.WAITING and job.is_open and not job.is_final
    again = Job.claim(job.pk, "w")
    assert again is not None and again.attempts == 2


def test_failed_job_is_not_claimable_before_its_retry_time():
    _, job = make_site()
    job = Job.claim(job.pk, "w")
    job.mark_failed("boom", retry_in=3600)
    assert Job.claim(job.pk, "w") is None


def test_last_attempt_failing_is_final():
    _, job = make_site()
    Job.objects.filter(pk=job.pk).update(max_attempts=1)
    job = Job.claim(job.pk, "w")
    job.mark_failed("boom", retry_in=1)
    assert job.is_final
    assert Job.claim(job.pk, "w") is None


def test_site_transitions_refuse_illegal_moves():
    site, _ = make_site()
    site.mark_active()
    Site.objects.filter(pk=site.pk).update(status=Site.Status.DEPROVISIONING)
    site.refresh_from_db()
    with pytest.raises(InvalidTransition):
        site.mark_active()


def test_one_open_job_per_site():
    site, _ = make_site()
    with pytest.raises(SiteBusy):
        delete_site(site)
    assert Job.objects.count() == 1


def test_a_zombie_can_be_retried_with_a_fresh_job():
    site, job = make_site()
    Job.objects.filter(pk=job.pk).update(max_attempts=1)
    job = Job.claim(job.pk, "w")
    job.mark_failed("boom")
    Site.objects.filter(pk=site.pk).update(current_job=None)
    site.refresh_from_db()
    assert site.is_zombie
    new = retry_site(site)
    assert new.pk != job.pk and new.type == Site.JobType.PROVISION and new.status == Job.Status.PENDING
    site.refresh_from_db()
    assert site.current_job_id == new.pk and not site.is_zombie


def test_job_history_survives_the_site():
    site, job = make_site("gone")
    site.delete()
    job.refresh_from_db()
    assert job.subject is None and job.subject_name == "gone"


def test_no_job_opens_while_the_reconciler_repairs_the_site():
    from django.utils import timezone

    site, job = make_site("repairing")
    job = Job.claim(job.pk, "w")
    site.mark_active()
    job.mark_done()
    Site.objects.filter(pk=site.pk).update(current_job=None, repairing_since=timezone.now())
    site.refresh_from_db()
    with pytest.raises(SiteBusy):
        delete_site(site)
    Site.objects.filter(pk=site.pk).update(repairing_since=None)
    assert delete_site(site).type == Site.JobType.DEPROVISION


def test_a_repair_that_died_does_not_block_the_site_for_ever():
    import datetime as dt

    from django.utils import timezone

    site, job = make_site("stalerepair")
    Site.objects.filter(pk=site.pk).update(
        current_job=None, status=Site.Status.ACTIVE, repairing_since=timezone.now() - dt.timedelta(hours=1)
    )
    site.refresh_from_db()
    assert delete_site(site).type == Site.JobType.DEPROVISION
