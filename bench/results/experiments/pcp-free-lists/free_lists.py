"""Pages freed in bulk stay on the kernel's per-CPU free lists, which MemFree and MemAvailable do not count.

Run as root on an otherwise quiet host: reads /proc/zoneinfo (the ``count:``
of every zone's per-CPU lists) and /proc/meminfo, maps and touches 3 GB of
anonymous memory in 100 MB pieces, frees it all, and reads again at once and
over the next 60 s; then drops the caches and asks for a compaction (neither
empties the lists: printed too). One JSON line per reading on stdout.
"""

import json
import mmap
import time
from pathlib import Path

MB = 1 << 20


def reading(what: str) -> dict:
    pcp = sum(
        int(line.split()[1])
        for line in Path("/proc/zoneinfo").read_text().splitlines()
        if line.strip().startswith("count:")
    )
    info = {line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()}
    return {
        "what": what,
        "t": round(time.time(), 1),
        "pcp_free_mb": round(pcp * 4 / 1024, 1),
        "mem_free_mb": round(info["MemFree"] / 1024, 1),
        "mem_available_mb": round(info["MemAvailable"] / 1024, 1),
    }


def main() -> None:
    print(json.dumps(reading("before")), flush=True)
    pieces = []
    for _ in range(30):
        piece = mmap.mmap(-1, 100 * MB)
        piece.write(b"x" * (100 * MB))
        pieces.append(piece)
    print(json.dumps(reading("3 GB mapped and touched")), flush=True)
    for piece in pieces:
        piece.close()
    freed = time.monotonic()
    print(json.dumps(reading("freed")), flush=True)
    for seconds in (5, 15, 30, 60):
        time.sleep(max(0.0, freed + seconds - time.monotonic()))
        print(json.dumps(reading(f"{seconds} s after")), flush=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    print(json.dumps(reading("after drop_caches")), flush=True)
    Path("/proc/sys/vm/compact_memory").write_text("1\n")
    print(json.dumps(reading("after compact_memory")), flush=True)


main()
