"""What a site is, in the control database: the Site model, its names and rules."""

from jobs.models import InvalidTransition
from sites.models.backup import Backup
from sites.models.domain import Domain
from sites.models.site import Site, SiteBusy, known_secrets

__all__ = ["Backup", "Domain", "InvalidTransition", "Site", "SiteBusy", "known_secrets"]
