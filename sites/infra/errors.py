class InfraError(Exception):
    """An external system (docker, mariadb, caddy, nginx, site) refused or failed.

    ``permanent`` says whether running the job again could help: a dependency
    that is down may come back, a name held by someone else will not.
    """

    permanent = False

    def __init__(self, dependency: str, message: str):
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency
        self.message = message


class ForeignResource(InfraError):
    """A resource with one of our deterministic names exists but is not ours.

    It is never modified or removed; the job fails for good and names it.
    """

    permanent = True


class InvalidConfiguration(InfraError):
    """The external system refused the request itself (a 400 from the Docker
    engine, an image that does not exist): sent again, it fails the same way.

    The job fails for good and says why; no retry.
    """

    permanent = True


class VolumeHeldByEngine(InfraError):
    """The engine refuses to remove a volume that no container mounts any more.

    An engine without moby#45754 (June 2023; Debian bookworm's docker.io
    20.10.24 is one) forgets, when it live-restores a running container, that
    the container mounts its volumes (moby#44422): once the container is
    gone, the mount count of a volume with driver options (a bind of a quota
    directory) has wrapped below zero, and the engine answers "volume has
    active mounts" until it restarts. Nothing a job does changes that sooner.
    """

    permanent = True
