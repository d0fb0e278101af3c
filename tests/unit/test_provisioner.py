"""The provisioner's orchestration, with small fake steps (the real ones run in the integration tests)."""

import pytest

from sites.infra.errors import InfraError
from sites.provisioning import orchestrator as provisioner
from sites.provisioning import steps as real_steps
from sites.provisioning import templates


class FakeStep:
    reversible = True

    def __init__(self, name, log, fail_apply=False, fail_undo=False, needs=()):
        self.name, self.log, self.fail_apply, self.fail_undo = name, log, fail_apply, fail_undo
        self.needs = needs

    def apply(self, ctx):
        self.log.append(("apply", self.name))
        if self.fail_apply:
            raise InfraError("docker", f"{self.name} exploded")

    def undo(self, ctx):
        self.log.append(("undo", self.name))
        if self.fail_undo:
            raise InfraError("docker", f"{self.name} would not go")


@pytest.fixture
def steps(monkeypatch):
    log: list[tuple[str, str]] = []

    def install(*specs):
        # Each fake step needs the ones before it: they run one after another.
        made = tuple(
            FakeStep(name, log, needs=tuple(n for n, _ in specs[:index]), **options)
            for index, (name, options) in enumerate(specs)
        )
        monkeypatch.setattr(provisioner, "PROVISION_STEPS", made)
        return made

    return log, install


def recorder(records):
    def record(name, phase, outcome, error="", handle=None):
        records.append((name, phase, outcome))
        return len(records)

    return record


def test_a_failing_step_undoes_itself_and_everything_before_it_in_reverse(steps):
    log, install = steps
    install(("a", {}), ("b", {}), ("c", {"fail_apply": True}), ("d", {}))
    with pytest.raises(provisioner.StepFailed, match="step c failed: docker: c exploded") as caught:
        provisioner.Provisioner("s", "pw").provision()
    assert log == [("apply", "a"), ("apply", "b"), ("apply", "c"), ("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert caught.value.undo_errors == []


def test_an_undo_failure_does_not_stop_the_rest_of_the_rollback(steps):
    log, install = steps
    install(("a", {}), ("b", {"fail_undo": True}), ("c", {"fail_apply": True}))
    with pytest.raises(provisioner.StepFailed, match="rollback incomplete: b: docker: b would not go"):
        provisioner.Provisioner("s", "pw").provision()
    assert ("undo", "a") in log


def test_every_step_is_recorded_as_it_runs(steps):
    records: list[tuple[str, str, str]] = []
    _, install = steps
    install(("a", {}), ("b", {"fail_apply": True}))
    with pytest.raises(provisioner.StepFailed):
        provisioner.Provisioner("s", "pw", recorder=recorder(records)).provision()
    assert records == [
        ("a", "apply", "RUNNING"),
        ("a", "apply", "OK"),
        ("b", "apply", "RUNNING"),
        ("b", "apply", "FAILED"),
        ("b", "undo", "RUNNING"),
        ("b", "undo", "UNDONE"),
        ("a", "undo", "RUNNING"),
        ("a", "undo", "UNDONE"),
    ]


def test_injected_fault_after_a_step_rolls_back(steps, settings):
    log, install = steps
    install(("a", {}), ("b", {}))
    settings.WPFLEET_FAULTS = ("b",)
    with pytest.raises(provisioner.StepFailed, match="injected fault after b"):
        provisioner.Provisioner("s", "pw").provision()
    assert log[-2:] == [("undo", "b"), ("undo", "a")]


def test_deprovision_undoes_all_steps_in_reverse(steps):
    log, install = steps
    install(("a", {}), ("b", {}))
    provisioner.Provisioner("s", "pw").deprovision()
    assert log == [("undo", "b"), ("undo", "a")]


def test_the_real_steps_follow_the_seed_order_with_the_install_before_the_route():
    assert real_steps.STEP_NAMES == (
        "database",
        "volume",
        "nginx",
        "php",
        "nginx_config",
        "wordpress",
        "route",
        "live_check",
    )


def test_the_nginx_server_block_is_the_seeds():
    from sites.models.naming import SiteNames

    block = templates.nginx_server_block(SiteNames("mysite"))
    # The seed passed to php_mysite:9000 on a shared network; PHP-FPM now
    # shares nginx's network namespace and listens on its loopback only.
    assert "fastcgi_pass 127.0.0.1:9000;" in block
    assert "listen = 127.0.0.1:9000\n" in templates.php_pool_config()
    assert "listen = 127.0.0.1:9001\n" in templates.php_pool_config(9001)
    assert "fastcgi_param HTTPS on;" in block
    # The seed fixed HTTP_HOST to the site's one hostname; with its own domains, WordPress sees the one asked for.
    assert "fastcgi_param HTTP_HOST $host;" in block
    assert "try_files $uri $uri/ /index.php?$args;" in block


def test_grant_pattern_escapes_wildcards():
    from sites.infra.mariadb import grant_pattern, quote_ident

    assert grant_pattern("wp_my_site") == r"`wp\_my\_site`"
    with pytest.raises(ValueError):
        quote_ident("wp`; DROP")
