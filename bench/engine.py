"""`python -m bench.engine`: what one Docker operation costs as the host fills with idle containers, no wpfleet code involved.

Why it exists: at 1,000 real sites a new site's POST→ACTIVE takes about 1.5 s
more than on the empty host (``bench/results/scale/``), and every step that
calls the engine is slower, not only those that use the CPU. This measures
the engine's own floor, so that the part a change to wpfleet can win back is
known before it is made.

Each "pair" stands in for a site's footprint on the host, nothing else: a
container on a bridge network (as a site's nginx on its backend shard) and a
second one in its network namespace (as its PHP), one shim for both (the
lab's shim wrapper groups them as a site's), both ``sleep infinity``
from the lab's one-layer base image, with a site's three local volumes
mounted (two binds of host directories and an overlay, as the site's files,
page cache and PHP ``/tmp``). So the host's mount table, the shims and the
engine's records grow as they do with sites; no process serves anything,
no image has a site image's layers (its overlay lines are shorter), and
there is no database, Caddy route or panel.

At each level (pairs existing), with nothing else being created:
- the host's mount table: lines, bytes, and the time to read it once (what
  runc and dockerd do many times per operation);
- the shims' CPU over a window (``containerd-shim`` ticks from /proc);
- ``samples`` times, one at a time: create and start a pair (with its
  volumes), an exec in the second, a put_archive of one small file into it,
  then remove the pair and its volumes; each call's wall time.

With ``--stand-in PAIRS``, one more level follows the last: every pair
removed, the mount table of PAIRS pairs made without a container (per pair
three overlays, two bind mounts and an nsfs mount, their paths and options
as long as the engine's, on a private tmpfs: ``StandInMounts``), and the
same samples taken. It tells the mount table's share of the slowdown from
that of the containers themselves (their shims, the engine's records).
``--stand-in-shape`` picks which of those mounts a stand-in pair has: what
another layout of a site would leave on the host.

Everything it makes is labelled ``wpfleet-engine-probe=1`` and removed at the
end (and at the start, if a previous run was killed). It needs the engine
to itself: run it on a host without sites.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import config
from bench.environment import git_info, machine_info, setup_django
from bench.stats import dist
from sites.infra.docker_host import tar_of

LABEL = {"wpfleet-engine-probe": "1"}
IMAGE = "wpfleet-lab/base:bookworm"
# A bridge holds at most 1,024 ports: 500 pairs a network, as wpfleet's shards.
PER_NETWORK = 500
SUBNETS = ("10.251.0.0/22", "10.251.4.0/22", "10.251.8.0/22", "10.251.12.0/22")


def _client():
    import docker

    return docker.from_env(timeout=600)


class Probe:
    def __init__(self, root: Path, runtime: str | None = None):
        self.client = _client()
        self.root = root
        # The OCI runtime of the pairs made (None: the engine's default).
        self.runtime = runtime

    # -- what a pair is made of -------------------------------------------
    def network(self, index: int) -> str:
        return f"engine-probe-{index // PER_NETWORK}"

    @staticmethod
    def labels(name: str) -> dict[str, str]:
        # As one wpfleet site's (an owner no panel has): the lab's shim wrapper
        # (lab/shim/) then serves both containers of a pair with one shim, as
        # it does a site's nginx and PHP.
        return {**LABEL, "wpfleet.owner": "wpfleet-engine-probe", "wpfleet.site": name}

    def _volumes(self, name: str) -> list:
        base = self.root / name
        for sub in ("files", "cache", "tmp", "work", "lower"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        made = []
        for kind, opts in (
            ("files", {"type": "none", "o": "bind", "device": str(base / "files")}),
            ("cache", {"type": "none", "o": "bind", "device": str(base / "cache")}),
            (
                "tmp",
                {
                    "type": "overlay",
                    "device": "overlay",
                    "o": f"lowerdir={base / 'lower'},upperdir={base / 'tmp'},workdir={base / 'work'}",
                },
            ),
        ):
            made.append(
                self.client.volumes.create(name=f"{name}-{kind}", driver="local", driver_opts=opts, labels=LABEL)
            )
        return made

    def _create(self, pair: str, suffix: str, network_mode: str, binds: list[str]) -> str:
        api = self.client.api
        host_config = api.create_host_config(network_mode=network_mode, binds=binds, runtime=self.runtime)
        return api.create_container(
            IMAGE, ["sleep", "infinity"], name=f"{pair}-{suffix}", labels=self.labels(pair), host_config=host_config
        )["Id"]

    def make_pair(self, name: str, network: str, timings: dict | None = None) -> None:
        api = self.client.api
        started = time.monotonic()
        volumes = self._volumes(name)
        mounts = [f"{v.name}:/mnt/{v.name.rsplit('-', 1)[1]}" for v in volumes]
        lap = time.monotonic()
        first = self._create(name, "a", network, mounts[:2])
        created_a = time.monotonic()
        api.start(first)
        started_a = time.monotonic()
        second = self._create(name, "b", f"container:{first}", mounts)
        created_b = time.monotonic()
        api.start(second)
        started_b = time.monotonic()
        if timings is not None:
            timings["volumes"].append(lap - started)
            timings["create_a"].append(created_a - lap)
            timings["start_a"].append(started_a - created_a)
            timings["create_b"].append(created_b - started_a)
            timings["start_b"].append(started_b - created_b)
            exec_id = api.exec_create(second, ["true"])["Id"]
            lap = time.monotonic()
            api.exec_start(exec_id)
            timings["exec"].append(time.monotonic() - lap)
            lap = time.monotonic()
            api.put_archive(second, "/mnt/files", tar_of({"probe.txt": (b"probe\n", 0o644, 0, 0)}))
            timings["put_archive"].append(time.monotonic() - lap)

    def remove_pair(self, name: str, timings: dict | None = None) -> None:
        lap = time.monotonic()
        for suffix in ("b", "a"):
            try:
                self.client.api.remove_container(f"{name}-{suffix}", force=True)
            except Exception as exc:  # gone already: nothing to remove
                if "No such container" not in str(exc):
                    raise
        removed = time.monotonic()
        for kind in ("files", "cache", "tmp"):
            try:
                self.client.api.remove_volume(f"{name}-{kind}")
            except Exception as exc:
                if "no such volume" not in str(exc).lower():
                    raise
        if timings is not None:
            timings["remove_pair"].append(removed - lap)
            timings["remove_volumes"].append(time.monotonic() - removed)
        shutil.rmtree(self.root / name, ignore_errors=True)

    # -- the host -----------------------------------------------------------
    def ensure_networks(self, pairs: int) -> None:
        for index in range(max(1, (pairs + PER_NETWORK - 1) // PER_NETWORK) + 1):
            name = f"engine-probe-{index}"
            if not self.client.networks.list(names=[name]):
                import docker

                pool = docker.types.IPAMPool(subnet=SUBNETS[index])
                self.client.networks.create(name, labels=LABEL, ipam=docker.types.IPAMConfig(pool_configs=[pool]))

    def fill(self, pairs: int, workers: int = 4) -> float:
        have = {
            c["Names"][0].lstrip("/")
            for c in self.client.api.containers(all=True, filters={"label": "wpfleet-engine-probe=1"})
        }
        todo = [i for i in range(pairs) if f"idle{i:04d}-b" not in have]
        started = time.monotonic()
        with cf.ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: self.make_pair(f"idle{i:04d}", self.network(i)), todo))
        return time.monotonic() - started

    def clean(self) -> None:
        api = self.client.api
        ids = [c["Id"] for c in api.containers(all=True, filters={"label": "wpfleet-engine-probe=1"})]
        with cf.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: api.remove_container(i, force=True), ids))
        for volume in api.volumes(filters={"label": "wpfleet-engine-probe=1"}).get("Volumes") or []:
            api.remove_volume(volume["Name"])
        for network in api.networks(filters={"label": "wpfleet-engine-probe=1"}):
            api.remove_network(network["Id"])
        if os.path.ismount(self.root / "mounts"):  # a run killed with its stand-in mounts
            subprocess.run(["umount", "-R", "-l", str(self.root / "mounts")], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


# A site's mounts on the host, as a pair has them: two container roots, the
# PHP /tmp overlay volume, the files and page cache bind volumes, the sandbox's
# network namespace. --stand-in-shape takes a subset: what another layout of
# a site would leave on the host.
SHAPE = ("root", "root", "tmp", "files", "cache", "netns")
KINDS = {"root", "tmp", "files", "cache", "netns"}


class StandInMounts:
    """The mount table of ``pairs`` pairs without a container: a private tmpfs of the probe's, under it per pair
    three overlays (two as a container's root, one as the PHP ``/tmp`` volume), two bind mounts (the
    files and page cache volumes) and one nsfs mount (a network namespace, as the engine keeps one per
    sandbox), their paths and options as long as the engine's."""

    def __init__(self, root: Path, pairs: int, shape: tuple[str, ...] = SHAPE):
        self.base = root / "mounts"
        self.pairs = pairs
        self.shape = shape

    def _overlay(self, pair: int, index: int, layers: int) -> None:
        # As /var/lib/docker/overlay2/<64 hex>/merged over l/<26>:... (the engine's short layer links).
        layer = self.base / f"{pair:08d}{index:02d}".ljust(64, "0")
        links = [self.base / "l" / f"{pair:08d}{index:02d}{n:02d}".ljust(26, "L") for n in range(layers)]
        for path in (layer / "diff", layer / "work", layer / "merged", *links):
            path.mkdir(parents=True)
        options = f"lowerdir={':'.join(map(str, links))},upperdir={layer / 'diff'},workdir={layer / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(layer / "merged")], check=True)

    def _bind(self, pair: int, kind: str) -> None:
        # As /var/lib/docker/volumes/<kind>_<site>/_data bound from the quota root's <site>/<kind>.
        source = self.base / "quota" / f"{pair:08d}x" / kind
        target = self.base / "volumes" / f"{kind}_{pair:08d}x" / "_data"
        source.mkdir(parents=True)
        target.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)

    def _nsfs(self, pair: int) -> None:
        # As /run/docker/netns/<12 hex>: this process's network namespace, bound to a file.
        target = self.base / "netns" / f"{pair:012x}"
        target.parent.mkdir(exist_ok=True)
        target.touch()
        subprocess.run(["mount", "--bind", "/proc/self/ns/net", str(target)], check=True)

    def __enter__(self) -> StandInMounts:
        self.base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "engine-probe", str(self.base)], check=True)
        # Private: nothing mounted under it propagates anywhere.
        subprocess.run(["mount", "--make-private", str(self.base)], check=True)
        for pair in range(self.pairs):
            for index, kind in enumerate(self.shape):
                if kind == "root":  # a container's root: the image's layer and the init layer
                    self._overlay(pair, index, 2)
                elif kind == "tmp":  # the PHP /tmp volume
                    self._overlay(pair, index, 1)
                elif kind == "netns":
                    self._nsfs(pair)
                else:
                    self._bind(pair, kind)
        return self

    def __exit__(self, *exc: object) -> None:
        # Lazily and recursively: the tmpfs and every mount under it.
        subprocess.run(["umount", "-R", "-l", str(self.base)], check=False)


def mount_table(reads: int = 20) -> dict:
    data = Path("/proc/self/mountinfo").read_bytes()
    started = time.perf_counter()
    for _ in range(reads):
        Path("/proc/self/mountinfo").read_bytes()
    per_read = (time.perf_counter() - started) / reads
    fstypes: dict[str, int] = {}
    for line in data.decode(errors="replace").splitlines():
        fstype = line.split(" - ", 1)[1].split()[0] if " - " in line else "?"
        fstypes[fstype] = fstypes.get(fstype, 0) + 1
    return {"lines": data.count(b"\n"), "bytes": len(data), "read_ms": round(per_read * 1000, 2), "by_type": fstypes}


def _shim_ticks() -> tuple[int, int]:
    total, count = 0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            if "containerd-shim" not in fields[0]:
                continue
            rest = fields[1].split()
            total += int(rest[11]) + int(rest[12])
            count += 1
        except (OSError, IndexError, ValueError):
            continue
    return total, count


def shim_cpu(window_s: float) -> dict:
    ticks = os.sysconf("SC_CLK_TCK")
    before, _ = _shim_ticks()
    time.sleep(window_s)
    after, count = _shim_ticks()
    seconds = (after - before) / ticks
    return {
        "shims": count,
        "window_s": window_s,
        "cpu_s": round(seconds, 2),
        "per_shim_us_per_s": round(seconds / window_s / count * 1e6, 1) if count else None,
    }


def measure(probe: Probe, samples: int, level: int) -> dict:
    keys = (
        "volumes",
        "create_a",
        "start_a",
        "create_b",
        "start_b",
        "exec",
        "put_archive",
        "remove_pair",
        "remove_volumes",
    )
    timings: dict[str, list[float]] = {key: [] for key in keys}
    for index in range(samples):
        name = f"sample{level:04d}-{index}"
        probe.make_pair(name, probe.network(level), timings)
        probe.remove_pair(name, timings)
    return {
        "timings": {key: dist(values) for key, values in timings.items()},
        "pair_total_p50": round(sum(dist(timings[key])["p50"] or 0 for key in keys), 3),
        "raw": {key: [round(v, 4) for v in values] for key, values in timings.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0,250,500,1000", help="pairs existing at each level (comma-separated)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--cpu-window", type=float, default=30.0)
    parser.add_argument(
        "--stand-in",
        type=int,
        default=0,
        metavar="PAIRS",
        help="a last level: no pair, the mount table of PAIRS pairs instead",
    )
    parser.add_argument(
        "--stand-in-shape",
        default=",".join(SHAPE),
        help=f"the mounts a stand-in pair has on the host (default {','.join(SHAPE)}; each at most once but root)",
    )
    parser.add_argument(
        "--runtime",
        default=None,
        help="the OCI runtime of every pair made, as the engine names it (default: its default)",
    )
    parser.add_argument("--out", type=Path, default=config.REPO / "bench" / "results" / "engine")
    args = parser.parse_args(argv)
    levels = sorted({int(x) for x in args.levels.split(",")})
    shape = tuple(kind.strip() for kind in args.stand_in_shape.split(",") if kind.strip())
    if not shape or set(shape) - KINDS or any(shape.count(k) > 1 for k in shape if k != "root"):
        parser.error(f"--stand-in-shape: kinds among {', '.join(sorted(KINDS))}, each at most once but root")
    if levels[-1] > PER_NETWORK * (len(SUBNETS) - 1):
        parser.error(f"at most {PER_NETWORK * (len(SUBNETS) - 1)} pairs")
    setup_django()  # (machine_info asks the engine through wpfleet's adapter)
    probe = Probe(Path(tempfile.gettempdir()) / "wpfleet-engine-probe", args.runtime)
    probe.clean()
    machine = machine_info()
    result: dict = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git": git_info(),
            "machine": machine,
            "image": IMAGE,
            "samples": args.samples,
            "runtime": args.runtime or (machine.get("docker") or {}).get("default_runtime"),
        },
        "levels": [],
    }
    try:
        probe.ensure_networks(levels[-1])
        for level in levels:
            fill_s = probe.fill(level)
            time.sleep(5)  # the fill's own work settles
            row: dict[str, Any] = {
                "pairs": level,
                "fill_s": round(fill_s, 1),
                "mount_table": mount_table(),
                "shims": shim_cpu(args.cpu_window),
            }
            row.update(measure(probe, args.samples, level))
            result["levels"].append(row)
            t = row["timings"]
            print(
                f"engine: {level} pairs: mountinfo {row['mount_table']['lines']} lines, "
                f"{row['mount_table']['bytes'] // 1024} KiB, {row['mount_table']['read_ms']} ms a read; "
                f"shims {row['shims']['cpu_s']} s CPU in {args.cpu_window:g} s; p50 start_a {t['start_a']['p50']}, "
                f"start_b {t['start_b']['p50']}, exec {t['exec']['p50']}, put_archive {t['put_archive']['p50']}, "
                f"remove {t['remove_pair']['p50']}; pair total {row['pair_total_p50']} s",
                flush=True,
            )
        if args.stand_in:
            probe.clean()
            probe.ensure_networks(0)
            with StandInMounts(probe.root, args.stand_in, shape):
                time.sleep(5)
                row = {
                    "pairs": 0,
                    "stand_in_pairs": args.stand_in,
                    "stand_in_shape": list(shape),
                    "mount_table": mount_table(),
                    "shims": shim_cpu(args.cpu_window),
                }
                row.update(measure(probe, args.samples, 0))
            result["levels"].append(row)
            t = row["timings"]
            print(
                f"engine: 0 pairs, the mounts of {args.stand_in} ({','.join(shape)}): mountinfo {row['mount_table']['lines']} "
                f"lines, {row['mount_table']['bytes'] // 1024} KiB, {row['mount_table']['read_ms']} ms a read; "
                f"p50 start_a {t['start_a']['p50']}, start_b {t['start_b']['p50']}, exec {t['exec']['p50']}, "
                f"put_archive {t['put_archive']['p50']}, remove {t['remove_pair']['p50']}; "
                f"pair total {row['pair_total_p50']} s",
                flush=True,
            )
    finally:
        cleaned = time.monotonic()
        probe.clean()
        result["meta"]["clean_s"] = round(time.monotonic() - cleaned, 1)
        result["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"engine: results in {args.out / 'latest.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
