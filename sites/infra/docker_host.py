"""The Docker host (app-01), through the Docker SDK only: no shell strings."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

import docker
import requests
from django.conf import settings
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

from sites.infra.errors import ForeignResource, InfraError, InvalidConfiguration, VolumeHeldByEngine


def _invalid_request(exc: APIError) -> bool:
    """Whether the engine refused the request itself: sent again, it would fail the same way.

    A 400 (a bad parameter, an invalid mount or name), or an image that does
    not exist (a 404 "No such image" when a container is created). A 409 (a
    conflict), a 500 (the engine's own trouble) or another 404 (a container
    removed meanwhile) may pass on a later attempt.
    """
    if isinstance(exc, docker.errors.ImageNotFound) or exc.status_code == 400:
        return True
    return exc.status_code == 404 and "no such image" in str(exc.explanation or "").lower()


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Turn the Docker SDK's errors into InfraErrors: InvalidConfiguration
    (permanent) for a request the engine refuses as such, a retryable
    InfraError for everything else."""
    try:
        yield
    except InfraError:
        raise
    except APIError as exc:
        if _invalid_request(exc):
            raise InvalidConfiguration("docker", f"{what}: {exc.explanation or exc}") from exc
        if isinstance(exc, NotFound):
            raise InfraError("docker", f"{what}: not found ({exc.explanation or exc})") from exc
        raise InfraError("docker", f"{what}: {exc.explanation or exc}") from exc
    except docker.errors.InvalidArgument as exc:
        # The SDK's own check of the arguments, before anything reached the engine.
        raise InvalidConfiguration("docker", f"{what}: {exc}") from exc
    except (DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise InfraError("docker", f"{what}: engine unreachable ({exc.__class__.__name__}: {exc})") from exc


def _owned(labels: dict | None, expected: dict[str, str]) -> bool:
    labels = labels or {}
    return all(labels.get(key) == value for key, value in expected.items() if key != "wpfleet.role")


def tar_of(files: Mapping[str, tuple[bytes | None, int, int, int]]) -> bytes:
    """A tar archive of ``{name: (data, mode, uid, gid)}``, for put_archive.

    Names may contain sub-directories; they are created (put_archive needs an
    existing target directory, but creates what the archive contains). Data
    None is a directory of that mode (the engine sets the mode of one that
    exists too).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        made: set[str] = set()
        for name in files:
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in made:
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                    tar.addfile(info)
                    made.add(directory)
        for name, (data, mode, uid, gid) in files.items():
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.uid, info.gid = uid, gid
            info.mtime = int(time.time())
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Listed:
    """A container as the engine's listing shows it: one API call lists them all.

    It has the name, labels, state, the networks it is attached to and its
    mounts, but not what only an inspection has (its aliases on a network).
    """

    def __init__(self, summary: dict):
        self.attrs = summary
        self.id = str(summary.get("Id") or "")
        names = summary.get("Names") or [""]
        self.name = str(names[0]).lstrip("/")
        self.labels: dict[str, str] = dict(summary.get("Labels") or {})
        self.status = str(summary.get("State") or "")

    @property
    def networks(self) -> set[str]:
        return set((self.attrs.get("NetworkSettings") or {}).get("Networks") or {})


class DockerHost:
    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock, docker_errors("connect"):
                if self._client is None:
                    if settings.WPFLEET_DOCKER_HOST:
                        self._client = docker.DockerClient(
                            base_url=settings.WPFLEET_DOCKER_HOST,
                            version="auto",
                            timeout=settings.WPFLEET_DOCKER_TIMEOUT,
                        )
                    else:
                        self._client = docker.from_env(version="auto", timeout=settings.WPFLEET_DOCKER_TIMEOUT)
        return self._client

    def ping(self) -> None:
        with docker_errors("ping"):
            self.client.ping()

    # --- lookups --------------------------------------------------------------

    def container(self, name: str) -> Container | None:
        with docker_errors(f"inspect container {name}"):
            try:
                return self.client.containers.get(name)
            except NotFound:
                return None

    def volume(self, name: str):
        with docker_errors(f"inspect volume {name}"):
            try:
                return self.client.volumes.get(name)
            except NotFound:
                return None

    def network(self, name: str):
        with docker_errors(f"inspect network {name}"):
            try:
                return self.client.networks.get(name)
            except NotFound:
                return None

    def owned_by_site(self, kind: str, name: str, labels: dict[str, str]) -> bool | None:
        """True if ours, False if foreign, None if absent."""
        found = {"container": self.container, "volume": self.volume, "network": self.network}[kind](name)
        if found is None:
            return None
        return _owned(
            found.attrs.get("Config", {}).get("Labels") if kind == "container" else found.attrs.get("Labels"), labels
        )

    def _refuse_foreign(self, kind: str, name: str, labels: dict | None, expected: dict[str, str]) -> None:
        if not _owned(labels, expected):
            raise ForeignResource(
                "docker", f"a {kind} named {name} exists without wpfleet's labels for this site; it was left untouched"
            )

    # --- volumes ----------------------------------------------------------------

    def ensure_volume(self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None) -> None:
        """The volume, created if missing (``driver_opts``: the local driver's, e.g. a bind of a directory).

        An existing one is kept as it is (a site's volume made before quotas stays a plain one).
        """
        existing = self.volume(name)
        if existing is not None:
            self._refuse_foreign("volume", name, existing.attrs.get("Labels"), labels)
            return
        with docker_errors(f"create volume {name}"):
            if driver_opts:
                self.client.volumes.create(name=name, labels=labels, driver="local", driver_opts=driver_opts)
            else:
                self.client.volumes.create(name=name, labels=labels)

    def remove_volume(self, name: str, labels: dict[str, str]) -> str | None:
        """Remove our volume; returns a note when something foreign was left alone."""
        existing = self.volume(name)
        if existing is None:
            return None
        if not _owned(existing.attrs.get("Labels"), labels):
            return f"volume {name} is not ours: left untouched"
        with docker_errors(f"remove volume {name}"):
            try:
                existing.remove(force=True)
            except NotFound:
                pass
            except APIError as exc:
                if "active mounts" in str(exc.explanation or exc) and not self.containers_using(name):
                    raise VolumeHeldByEngine(
                        "docker",
                        f"remove volume {name}: the engine counts a mount of it that no container has "
                        "(a live restore, moby#44422): it can be removed once dockerd has restarted",
                    ) from exc
                raise
        return None

    def containers_using(self, volume: str) -> list[str]:
        """Names of the containers, of any owner, running or not, that mount ``volume``."""
        with docker_errors(f"list containers using volume {volume}"):
            listed = self.client.api.containers(all=True, filters={"volume": volume})
        return [(c.get("Names") or ["?"])[0].lstrip("/") for c in listed]

    # --- networks ---------------------------------------------------------------

    def ensure_network(self, name: str, labels: dict[str, str], subnet: str | None = None) -> bool:
        """The bridge network, created if missing (``subnet``: its addresses; none: from the engine's pool).

        Returns whether it was created here. Two creators of one name: the
        engine refuses the second (check_duplicate), which then judges what won.
        """
        existing = self.network(name)
        if existing is not None:
            self._refuse_foreign("network", name, existing.attrs.get("Labels"), labels)
            return False
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]) if subnet else None
        with docker_errors(f"create network {name}"):
            try:
                self.client.networks.create(name=name, driver="bridge", labels=labels, ipam=ipam, check_duplicate=True)
                return True
            except APIError as exc:
                if exc.status_code != 409:
                    raise
        existing = self.network(name)
        if existing is None:
            raise InfraError("docker", f"create network {name}: name conflict, then not found")
        self._refuse_foreign("network", name, existing.attrs.get("Labels"), labels)
        return False

    def network_summaries(self) -> list[dict]:
        """Every network on the engine, as listed (name, labels, subnets; not its members): one API call."""
        with docker_errors("list networks"):
            return list(self.client.api.networks())

    def network_members(self, name: str) -> int | None:
        """How many containers are attached to the network (None: no such network)."""
        with docker_errors(f"inspect network {name}"):
            try:
                return len(self.client.api.inspect_network(name).get("Containers") or {})
            except NotFound:
                return None

    def remove_network(self, name: str, labels: dict[str, str]) -> str | None:
        existing = self.network(name)
        if existing is None:
            return None
        if not _owned(existing.attrs.get("Labels"), labels):
            return f"network {name} is not ours: left untouched"
        with docker_errors(f"remove network {name}"):
            try:
                existing.remove()
            except NotFound:
                pass
        return None

    def connect(self, network: str, container: Container, aliases: list[str] | None = None) -> None:
        """Attach a container to a network with exactly these DNS aliases, unless it already is.

        Docker cannot change the aliases of an attached container: one
        attached with others is detached and attached again (a moment in
        which that one container is unreachable on the network; Caddy retries
        its connections meanwhile, lab/caddy/Caddyfile).
        """
        wanted = list(aliases or ())
        attached = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        if network in attached:
            # Docker adds the container's short id itself: not an alias of ours.
            current = set(attached[network].get("Aliases") or ()) - {container.id[:12], container.name}
            if current == set(wanted):
                return
            with docker_errors(f"disconnect {container.name} from {network}"):
                self.client.networks.get(network).disconnect(container)
        with docker_errors(f"connect {container.name} to {network}"):
            try:
                self.client.networks.get(network).connect(container, aliases=wanted or None)
            except APIError as exc:
                if "already exists" not in str(exc.explanation or ""):
                    raise

    def disconnect(self, network: str, container: str) -> None:
        """Detach a container from a network (nothing to do when either is gone)."""
        with docker_errors(f"disconnect {container} from {network}"):
            try:
                self.client.api.disconnect_container_from_network(container, network)
            except NotFound:
                pass

    @staticmethod
    def aliases(container: Container, network: str) -> list[str]:
        attached = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        return list((attached.get(network) or {}).get("Aliases") or ())

    # --- containers -------------------------------------------------------------

    def ensure_container(
        self,
        name: str,
        labels: dict[str, str],
        *,
        extra_labels: dict[str, str] | None = None,
        aliases: list[str] | None = None,
        **create: object,
    ) -> tuple[Container, bool]:
        """The container, created (not started) if missing; (container, created).

        ``labels`` mark it ours (an existing one must carry them);
        ``extra_labels`` are only given to one made here (what it was made
        with, e.g. its PHP-FPM port). ``aliases``: its DNS aliases on the
        ``network`` it is made on, set at creation (no detach and attach).
        """
        existing = self.container(name)
        if existing is not None:
            self._refuse_foreign("container", name, existing.labels, labels)
            return existing, False
        if aliases:
            network = str(create["network"])
            create["networking_config"] = {network: self.client.api.create_endpoint_config(aliases=list(aliases))}
        with docker_errors(f"create container {name}"):
            try:
                return self.client.containers.create(
                    name=name, labels={**labels, **(extra_labels or {})}, **create
                ), True
            except APIError as exc:
                if exc.status_code != 409:
                    raise
        # Lost a race with another creator of the same name: judge what won.
        existing = self.container(name)
        if existing is None:
            raise InfraError("docker", f"create container {name}: name conflict, then not found")
        self._refuse_foreign("container", name, existing.labels, labels)
        return existing, False

    def start(self, container: Container) -> None:
        with docker_errors(f"start {container.name}"):
            container.reload()
            if container.status != "running":
                container.start()

    def restart_listed(self, container_id: str, name: str, timeout: int = 10) -> None:
        """Restart a container found in a listing of this owner's, by its id."""
        with docker_errors(f"restart {name}"):
            self.client.api.restart(container_id, timeout=timeout)

    @staticmethod
    def network_mode(container: Container | Listed) -> str:
        """The container's network mode: a network's name, or ``container:<id>`` (the listing shows it too)."""
        return str((container.attrs.get("HostConfig") or {}).get("NetworkMode") or "")

    @staticmethod
    def started_at(container: Container | Listed) -> datetime | None:
        """When the container last started (an inspected one only: a listing does not say)."""
        state = container.attrs.get("State")
        started = state.get("StartedAt") if isinstance(state, dict) else None
        try:
            moment = datetime.fromisoformat(str(started)) if started else None
        except ValueError:
            return None
        # The engine's zero time: never started.
        return None if moment is None or moment.year < 2000 else moment

    def start_listed(self, container_id: str, name: str) -> None:
        """Start a container found in a listing of this owner's, by its id (not its name, which another may take meanwhile)."""
        with docker_errors(f"start {name}"):
            self.client.api.start(container_id)

    def image_id(self, image: str) -> str:
        """The image's id (sha256 hex, without the prefix): what a tag names now."""
        with docker_errors(f"inspect image {image}"):
            return str(self.client.images.get(image).id).removeprefix("sha256:")

    def image_files(self, image: str, path: str, labels: dict[str, str]) -> Iterator[bytes]:
        """A directory of an image, as a tar stream, read from a container created for it (never started)."""
        with docker_errors(f"read {path} of {image}"):
            container = self.client.containers.create(image, command=["true"], labels=labels, network_disabled=True)
        try:
            with docker_errors(f"read {path} of {image}"):
                stream, _ = self.client.api.get_archive(container.id, path, chunk_size=1 << 20)
                yield from stream
        finally:
            with docker_errors(f"remove the container that read {image}"):
                container.remove(force=True)

    def run_once(
        self,
        image: str,
        argv: list[str],
        *,
        labels: dict[str, str],
        user: str = "",
        binds: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run ``argv`` in a new container of ``image`` (no network; ``binds``: host path → container path), then remove it."""
        with docker_errors(f"run {argv[0]} in {image}"):
            container = self.client.containers.create(
                image,
                entrypoint=argv[:1],
                command=argv[1:],
                user=user,
                labels=labels,
                network_disabled=True,
                volumes={host: {"bind": inside, "mode": "rw"} for host, inside in (binds or {}).items()},
            )
        try:
            with docker_errors(f"run {argv[0]} in {image}"):
                container.start()
                code = int(container.wait(timeout=300)["StatusCode"])
                output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace").strip()
        finally:
            with docker_errors(f"remove the container that ran {argv[0]}"):
                container.remove(force=True)
        return code, output

    def set_restart_policy(self, container: Container, policy: dict[str, object]) -> None:
        """Give an existing container another restart policy (no restart of it)."""
        with docker_errors(f"update {container.name}"):
            container.update(restart_policy=policy)
            container.reload()

    def restart(self, container: Container, timeout: int = 10) -> None:
        """Stop (gracefully, as ``stop``) and start a container again."""
        with docker_errors(f"restart {container.name}"):
            container.restart(timeout=timeout)
            container.reload()

    def stop(self, container: Container, timeout: int = 10) -> None:
        """Stop a running container (SIGTERM, then SIGKILL after ``timeout`` s); it stays, stopped.

        A stopped ``unless-stopped`` container stays stopped when the engine restarts.
        """
        with docker_errors(f"stop {container.name}"):
            container.reload()
            if container.status not in ("exited", "created"):
                container.stop(timeout=timeout)

    def rename(self, container: Container, name: str) -> None:
        """Give a container a new name (its address on its networks stays; DNS follows the name)."""
        with docker_errors(f"rename {container.name} to {name}"):
            container.rename(name)
            container.reload()

    def remove_container(self, name: str, labels: dict[str, str]) -> str | None:
        existing = self.container(name)
        if existing is None:
            return None
        if not _owned(existing.labels, labels):
            return f"container {name} is not ours: left untouched"
        with docker_errors(f"remove container {name}"):
            try:
                existing.remove(force=True)
            except NotFound:
                pass
        return None

    def put_files(
        self, container: Container, directory: str, files: Mapping[str, tuple[bytes | None, int, int, int]]
    ) -> None:
        """Write files into a container (running or only created) as one tar stream."""
        with docker_errors(f"write into {container.name}:{directory}"):
            if not container.put_archive(directory, tar_of(files)):
                raise InfraError("docker", f"write into {container.name}:{directory} was refused")

    def archive(self, container: str, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """A directory of the container as a tar stream (the archive API: no exec, no copy on disk).

        Errors while the stream is read are InfraErrors too: a reader must
        not take a stream that ended early for a whole one.
        """
        with docker_errors(f"read {container}:{path}"):
            stream, _ = self.client.api.get_archive(container, path, chunk_size=chunk_size)
        with docker_errors(f"read {container}:{path}"):
            yield from stream

    def extract(self, container: str, path: str, data: object) -> None:
        """Unpack a tar stream (bytes, a file object or an iterator of bytes) into a directory of the container."""
        with docker_errors(f"write into {container}:{path}"):
            if not self.client.api.put_archive(container, path, data):
                raise InfraError("docker", f"write into {container}:{path} was refused")

    def exec(
        self, container: Container | str, argv: list[str], *, user: str = "", environment: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Run a command in the container; (exit code, output). Pass values in
        ``environment``, never inside ``argv``, when they come from users."""
        name = container if isinstance(container, str) else container.name
        with docker_errors(f"exec in {name}"):
            target = self.client.containers.get(name) if isinstance(container, str) else container
            result = target.exec_run(argv, stdout=True, stderr=True, user=user, environment=environment)
        return result.exit_code, (result.output or b"").decode("utf-8", "replace").strip()

    def file_exists(self, container: Container | str, path: str) -> bool:
        name = container if isinstance(container, str) else container.name
        with docker_errors(f"stat {name}:{path}"):
            try:
                self.client.api.get_archive(name, path)
                return True
            except NotFound:
                return False

    def read_file(self, container: Container | str, path: str) -> str | None:
        """A file's text, read through the archive API (no exec); None if it does not exist."""
        name = container if isinstance(container, str) else container.name
        with docker_errors(f"read {name}:{path}"):
            try:
                stream, _ = self.client.api.get_archive(name, path)
            except NotFound:
                return None
            data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None else None
            return extracted.read().decode("utf-8", "replace") if extracted is not None else None

    def list_owned(self, kind: str, site: str | None = None) -> list:
        """This owner's containers, volumes or networks (of one site), each kind in one API call.

        Containers come as the engine lists them (``Listed``), not inspected:
        docker-py's own listing inspects each one, a call per container.
        """
        filters = {"label": [f"wpfleet.owner={settings.WPFLEET_OWNER}"]}
        if site:
            filters["label"].append(f"wpfleet.site={site}")
        with docker_errors(f"list {kind}s"):
            if kind == "container":
                return [Listed(summary) for summary in self.client.api.containers(all=True, filters=filters)]
            if kind == "volume":
                return self.client.volumes.list(filters=filters)
            return self.client.networks.list(filters=filters)

    # --- usage and logs (sites.ops.usage, sites.ops.logs) -----------------------

    def container_summaries(self) -> list[dict]:
        """Every container of this owner, as the engine lists them: one API call.

        Each is the engine's summary (``Id``, ``Names``, ``Labels``,
        ``State``, ``Created``), not an inspection: ``list_owned`` inspects
        each container it lists, one more call per container.
        """
        filters = {"label": [f"wpfleet.owner={settings.WPFLEET_OWNER}"]}
        with docker_errors("list containers"):
            return list(self.client.api.containers(all=True, filters=filters))

    def root_dir(self) -> str:
        """The engine's data directory (its containers' json-file logs are under it)."""
        with docker_errors("engine info"):
            return str(self.client.info().get("DockerRootDir") or "/var/lib/docker")

    def logs(self, name: str, tail: int, labels: dict[str, str] | None = None) -> str:
        """The container's last ``tail`` log lines (stdout and stderr), each after its RFC 3339 timestamp.

        With ``labels``: "" when there is no such container (a site not built
        yet has no logs), and a foreign one's logs are never read.
        """
        if labels is not None:
            existing = self.container(name)
            if existing is None:
                return ""
            self._refuse_foreign("container", name, existing.labels, labels)
        with docker_errors(f"logs of {name}"):
            data = self.client.api.logs(name, stdout=True, stderr=True, timestamps=True, tail=tail)
        return (data or b"").decode("utf-8", "replace")
