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
