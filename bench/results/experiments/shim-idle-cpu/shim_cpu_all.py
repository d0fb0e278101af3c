"""CPU of every containerd-shim-runc-v2 on the host over a window, and the host's busy time.

python3 shim_cpu_all.py WINDOW_SECONDS
"""

import glob
import os
import subprocess
import sys
import time


def shims() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "containerd-shim-runc-v2"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def cpu_ns(pids: list[int]) -> int:
    """Time on CPU of every thread of these processes (schedstat's first field, ns)."""
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(path) as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total


def busy_ticks() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


window = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
pids = shims()
before, busy_before = cpu_ns(pids), busy_ticks()
time.sleep(window)
after, busy_after = cpu_ns(pids), busy_ticks()
per_shim = (after - before) / 1e6 / window / len(pids)
busy = (busy_after - busy_before) / os.sysconf("SC_CLK_TCK")
print(
    f"{len(pids)} shims: {(after - before) / 1e9:.3f} s CPU in {window:.0f} s = {per_shim:.3f} ms/s per shim;"
    f" host busy {busy:.2f} s"
)
