"""A customer's own domain for a site, beside the site's name under the panel's base domain."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from sites.models.site import Site


class Domain(models.Model):
    """One hostname a site answers to; the site's own ``<name>.<base domain>`` is not a row.

    A row is ADDING from the request until its job has made Caddy serve it,
    then ACTIVE; REMOVING from the request until its job has taken it away.
    ``primary`` is what the site's WordPress should call home (at most one
    per site; none: the site's own hostname); ``Site.home_domain`` is what it
    does, so a failed job knows what to return to.
    """

    class State(models.TextChoices):
        ADDING = "ADDING", "Adding"
        ACTIVE = "ACTIVE", "Active"
        REMOVING = "REMOVING", "Removing"

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="domains")
    # Lowercase ASCII (punycode), validated by sites.models.validation.validate_domain.
    name = models.CharField(max_length=253, unique=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.ADDING)
    primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["site"], condition=models.Q(primary=True), name="one_primary_domain"),
        ]

    def __str__(self) -> str:
        return self.name
