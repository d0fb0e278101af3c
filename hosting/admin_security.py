"""Admin hardening shared by every ModelAdmin of the project.

* Secret fields (a model's ``secret_fields``) take part in no changelist
  lookup, not even through a relation: Django allows ``?field__startswith=``
  on any local field, which answers yes/no questions about a secret one
  character at a time (Django's own UserAdmin blocks this for ``password``).
* Some third-party admins hand out more than their permissions suggest:
  API tokens are credentials, and a django-q schedule names any function to
  run by its dotted path. Those are for superusers only.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest


def secret_field_names() -> set[str]:
    return {name for model in apps.get_models() for name in getattr(model, "secret_fields", ())}


class RefuseSecretLookups:
    """ModelAdmin mixin: a changelist lookup naming a secret field anywhere in its path is refused (400)."""

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        if set(lookup.split(LOOKUP_SEP)) & secret_field_names():
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]


class SuperusersOnly:
    """ModelAdmin mixin: invisible and unusable to anyone but active superusers."""

    @staticmethod
    def _superuser(request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_superuser)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._superuser(request) and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request) and super().has_delete_permission(request, obj)  # type: ignore[misc]


SUPERUSER_ONLY_MODELS = (
    "authtoken.TokenProxy",
    "authtoken.Token",
    "django_q.Schedule",
    "django_q.Success",
    "django_q.Failure",
    "django_q.OrmQ",
)


def harden(site: admin.AdminSite) -> None:
    """Re-register every model so that the mixins above apply (called once the admins are registered)."""
    superuser_only = {label.lower() for label in SUPERUSER_ONLY_MODELS}
    for model, model_admin in list(site._registry.items()):
        bases: tuple[type, ...] = (RefuseSecretLookups,)
        if model._meta.label_lower in superuser_only:
            bases = (SuperusersOnly, *bases)
        cls = type(model_admin)
        if all(issubclass(cls, base) for base in bases):
            continue
        site.unregister(model)
        site.register(model, type(cls.__name__, (*bases, cls), {"__module__": cls.__module__}))
