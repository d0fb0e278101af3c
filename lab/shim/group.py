"""Put a site's PHP-FPM container under its nginx's containerd shim.

containerd's runc shim serves every container whose OCI spec names the same
``io.containerd.runc.v2.group`` (what Kubernetes does for a pod's
containers). Docker 20.10 cannot set OCI annotations, so this runs at the
shim's ``start``, in the new container's bundle (the working directory):
when the container joins another container's network namespace (a site's
PHP-FPM joins its nginx's) and both are the same wpfleet site's (their
``wpfleet.owner`` and ``wpfleet.site`` labels, from the engine's own record
of each container), the spec gets that annotation naming the nginx's id, and
the real shim's ``start`` then hands the container to the nginx's shim
(when it is not running, it starts one at that address, which the nginx
joins on its next start). One Go process fewer per site: about 2.8 MB and
half the shims' idle CPU (docs/performance.md).

Anything else (no such namespace, another owner's container, an unreadable
record) leaves the spec alone: the container gets its own shim, as without
this. The wrapper runs this with its output discarded and its exit status
ignored, then the real shim (containerd reads the start's output, stdout and
stderr together, as the shim's address): it cannot fail a start. What it
decided is left in the bundle, the file ``wpfleet-shim-group`` (gone with the
container's task).

Usage (by containerd-shim-runc-v2 here, in the bundle): group.py <the shim's arguments>
"""

from __future__ import annotations

import json
import os
import re
import sys

GROUP = "io.containerd.runc.v2.group"
DOCKER_ROOT = "/var/lib/docker"  # the engine's --data-root (the lab's default)
NETNS = re.compile(r"^/proc/(\d+)/ns/net$")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def labels(container_id: str) -> dict:
    with open(os.path.join(DOCKER_ROOT, "containers", container_id, "config.v2.json")) as f:
        return json.load(f).get("Config", {}).get("Labels") or {}


def leader(spec: dict) -> str | None:
    """The id of the container whose network namespace this spec joins, if any."""
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network":
            found = NETNS.match(ns.get("path") or "")
            if found is None:
                return None
            with open(f"/proc/{found.group(1)}/cgroup") as f:
                ids = CONTAINER_ID.findall(f.read())
            return ids[0] if ids else None
    return None


def group(own_id: str) -> str:
    """Annotate the bundle's spec when the container belongs under another's shim; says what was done."""
    with open("config.json") as f:
        spec = json.load(f)
    if (spec.get("annotations") or {}).get(GROUP):
        return f"grouped by its spec: {spec['annotations'][GROUP]}"
    other = leader(spec)
    if other is None or other == own_id:
        return "own shim: it joins no other container's network namespace"
    mine, theirs = labels(own_id), labels(other)
    keys = ("wpfleet.owner", "wpfleet.site")
    if not all(mine.get(k) and mine.get(k) == theirs.get(k) for k in keys):
        return f"own shim: {other} is not the same wpfleet site's"
    spec["annotations"] = {**(spec.get("annotations") or {}), GROUP: other}
    with open("config.json.wpfleet", "w") as f:
        json.dump(spec, f)
    os.replace("config.json.wpfleet", "config.json")
    return f"grouped with {other}"


def main() -> None:
    args = sys.argv[1:]
    try:
        decided = group(args[args.index("-id") + 1])
    # Recorded, not raised: the container gets its own shim.
    except Exception as exc:  # noqa: BLE001
        decided = f"own shim: {type(exc).__name__}: {exc}"
    try:
        with open("wpfleet-shim-group", "w") as f:
            f.write(decided + "\n")
    except OSError:
        pass


main()
