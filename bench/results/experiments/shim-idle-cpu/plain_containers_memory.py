"""By hand: does memory that no meminfo field shows grow with plain containers on one bridge?

Starts 4 x 130 idle nginx containers (label otherexp=1) on a /22 bridge of
their own and, before and after each 130, syncs, drops the caches, waits
10 s and prints one JSON line: MemFree, MemAvailable, what MemTotal has
beyond MemFree, AnonPages, Slab, KernelStack, PageTables, Cached, Buffers
and Percpu ("unattributed"), the per-CPU free lists, VmallocUsed, sockstat.
It removes nothing: `docker rm -f $(docker ps -aq --filter label=otherexp=1)`
and `docker network rm otherexp` afterwards.
"""

import json
import subprocess
import time

KNOWN = ("MemFree", "AnonPages", "Slab", "KernelStack", "PageTables", "Cached", "Buffers", "Percpu")


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0])
    return out


def pcp_pages() -> int:
    with open("/proc/zoneinfo") as f:
        return sum(int(line.split()[1]) for line in f if line.strip().startswith("count:"))


def reading(label: str) -> None:
    subprocess.run(["sync"], check=False)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    time.sleep(10)
    m = meminfo()
    running = subprocess.run("docker ps -q | wc -l", shell=True, capture_output=True, text=True).stdout
    with open("/proc/net/sockstat") as f:
        tcp = f.read().splitlines()[1]
    print(
        json.dumps(
            {
                "label": label,
                "containers": int(running),
                "MemFree_mb": m["MemFree"] // 1024,
                "MemAvailable_mb": m["MemAvailable"] // 1024,
                "unattributed_mb": (m["MemTotal"] - sum(m[k] for k in KNOWN)) // 1024,
                "pcp_free_mb": pcp_pages() * 4 // 1024,
                "AnonPages_mb": m["AnonPages"] // 1024,
                "Slab_mb": m["Slab"] // 1024,
                "VmallocUsed_mb": m["VmallocUsed"] // 1024,
                "sockstat": tcp,
            }
        ),
        flush=True,
    )


subprocess.run(
    ["docker", "network", "create", "--label", "otherexp=1", "--subnet", "10.250.0.0/22", "otherexp"],
    capture_output=True,
    check=False,
)
reading("start")
for step in range(4):
    for _ in range(130):
        subprocess.run(
            ["docker", "run", "-d", "--network", "otherexp", "--label", "otherexp=1", "wpfleet-lab/nginx:alpine"],
            capture_output=True,
            check=True,
        )
    reading(f"after {130 * (step + 1)}")
