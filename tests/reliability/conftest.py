# The fixtures of the integration tests (lab, make_site, clusters) serve here too.
from __future__ import annotations

import os
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from tests.integration.conftest import infra, make_site, worker_cluster  # noqa: F401

# What the reliability tests really did to the lab, recorded by each test once it
# has checked that the fault took effect (a worker that died, an engine that
# stopped, a container that was down). Each test asserts its own fault; this is
# only the run's summary.
INJECTED: dict[str, list[str]] = defaultdict(list)


def injected(kind: str, what: str) -> None:
    INJECTED[kind].append(what)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not INJECTED:
        return
    terminalreporter.section("faults injected by the reliability tests")
    for kind, items in INJECTED.items():
        terminalreporter.write_line(f"{kind}: {len(items)} ({', '.join(items)})")


# --- the Docker engine --------------------------------------------------------------

DOCKER_PID_FILE = Path("/var/run/docker.pid")


def dockerd_pid() -> int:
    return int(DOCKER_PID_FILE.read_text().strip())


def shim_pids(container_ids: set[str]) -> list[int]:
    """The pids of the containerd shims of these containers (full ids): a power cut kills them with the engine."""
    shims = subprocess.run(["pgrep", "-af", "containerd-shim-runc-v2"], capture_output=True, text=True).stdout
    pids = []
    for line in shims.splitlines():
        pid, _, command = line.partition(" ")
        arguments = command.split()
        if "-id" in arguments and arguments.index("-id") + 1 < len(arguments):
            if arguments[arguments.index("-id") + 1] in container_ids:
                pids.append(int(pid))
    return pids


def stop_engine(sig: int, timeout: float = 60) -> int:
    """Stop dockerd with ``sig`` (SIGTERM: a clean shutdown; SIGKILL: a crash); returns its pid."""
    pid = dockerd_pid()
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"dockerd (pid {pid}) did not stop within {timeout}s of signal {sig}")
