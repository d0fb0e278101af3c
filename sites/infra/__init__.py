"""One thin adapter per external system, each created lazily.

Library errors never escape an adapter: they become ``InfraError`` naming the
dependency, so a job's error says which system failed.
"""

from sites.infra.errors import ForeignResource, InfraError

__all__ = ["InfraError", "ForeignResource"]
