class InfraError(Exception):
    """An external system (docker, mariadb, caddy, nginx, site) refused or failed."""

    def __init__(self, dependency: str, message: str):
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency
        self.message = message


class ForeignResource(InfraError):
    """A resource with one of our deterministic names exists but is not ours.

    It is never modified or removed; the job fails and names it.
    """
