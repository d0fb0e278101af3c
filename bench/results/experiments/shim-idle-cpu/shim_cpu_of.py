"""CPU of the shims of the given containers over a window.

python3 shim_cpu_of.py WINDOW_SECONDS CONTAINER_ID...
"""

import glob
import subprocess
import sys
import time


def shim_of(container: str) -> int:
    """The parent of the container's first process: its shim."""
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True
    ).stdout.strip()
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cpu_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            with open(path) as f:
                total += int(f.read().split()[0])
    return total


window = float(sys.argv[1])
pids = [shim_of(container) for container in sys.argv[2:]]
before = cpu_ns(pids)
time.sleep(window)
after = cpu_ns(pids)
print(f"{len(pids)} shims of idle containers: {(after - before) / 1e6 / window / len(pids):.4f} ms/s per shim")
