"""wpfleet's own system checks: `manage.py check` (and `check --deploy`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.sites import all_sites
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import F

# An image reference fixed to one build: by registry digest, or by the lab's
# recipe-hash tag (lab/up.sh tags each stand-in image with its recipe's hash).
PINNED_IMAGE = re.compile(r".+@sha256:[0-9a-f]{64}|.+:[^:/@]*-r[0-9a-f]{16}")


def _images() -> Iterator[tuple[str, str]]:
    """(setting, image) of every image new sites may run."""
    for name in ("WPFLEET_PHP_IMAGE", "WPFLEET_NGINX_IMAGE"):
        yield name, getattr(settings, name)
    # One PHP image per version a site may choose (PATCH {"php_version": ...}).
    for version, image in (getattr(settings, "WPFLEET_PHP_VERSIONS", None) or {}).items():
        yield f"WPFLEET_PHP_VERSIONS[{version!r}]", image


@register(Tags.security, deploy=True)
def images_are_pinned(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    warnings = []
    for name, image in _images():
        if not PINNED_IMAGE.fullmatch(image):
            warnings.append(
                Warning(
                    f"{name}={image!r} is a mutable tag: a new push would change what new sites run.",
                    hint="Pin it by digest (name:tag@sha256:...) or use the lab's recipe-hash tag.",
                    id="wpfleet.W001",
                )
            )
    return warnings


# --- secret fields stay out of admin lists ------------------------------------------------
#
# hosting.admin_security refuses a changelist lookup on a secret field (a
# model's ``secret_fields``); an admin that searches, sorts, filters or shows
# one would answer the same questions through its own options, so naming a
# secret field in them is an error that stops `manage.py check` (and
# migrate, and runserver).

LIST_OPTIONS = ("search_fields", "ordering", "list_display", "list_filter", "sortable_by")


def _secret_in_path(model: type[Model], path: str) -> str | None:
    """``model.field`` of the first secret field along a lookup path, or None."""
    for part in path.split(LOOKUP_SEP):
        if part in getattr(model, "secret_fields", ()):
            return f"{model._meta.label}.{part}"
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return None  # a lookup (__startswith) or a transform: the path ends here
        if field.related_model is None:
            return None
        model = field.related_model
    return None


def _paths(item: Any) -> Iterator[str]:
    """The lookup paths an ordering or search entry names (a string, F(), OrderBy, or an expression)."""
    if isinstance(item, str):
        yield item.lstrip("-^=@?")
    elif isinstance(item, F):
        yield item.name  # type: ignore[attr-defined]  # (missing from django-stubs)
    elif hasattr(item, "get_source_expressions"):  # OrderBy, Lower(), ...
        for source in item.get_source_expressions():
            yield from _paths(source)


def _list_entries(model_admin: admin.ModelAdmin, option: str) -> Iterator[tuple[Any, Any]]:
    """(entry as written, what it orders/filters/shows by) of one list option."""
    value = getattr(model_admin, option, None)
    if option == "ordering" and not value:
        value = model_admin.model._meta.ordering  # the changelist's fallback
    for entry in value or ():
        if option == "list_filter":
            # "field", ("field", FilterClass), or a SimpleListFilter class (names no field)
            if isinstance(entry, list | tuple):
                yield entry, entry[0]
            elif isinstance(entry, str):
                yield entry, entry
        elif option in ("list_display", "sortable_by") and (callable(entry) or hasattr(model_admin, str(entry))):
            # a display callable: it sorts by its `ordering` (admin_order_field), if any
            display = entry if callable(entry) else getattr(model_admin, entry)
            yield entry, getattr(display, "admin_order_field", None)
        elif option in ("list_display", "sortable_by") and not _is_field(model_admin.model, entry):
            display = getattr(model_admin.model, str(entry), None)
            yield entry, getattr(display, "admin_order_field", None)
        else:
            yield entry, entry


def _is_field(model: type[Model], name: Any) -> bool:
    try:
        model._meta.get_field(str(name).split(LOOKUP_SEP)[0])
    except FieldDoesNotExist:
        return False
    return True


@register(Tags.security, Tags.admin)
def secret_fields_stay_out_of_admin_lists(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    for site in list(all_sites):
        for model, model_admin in site._registry.items():
            for option in LIST_OPTIONS:
                for entry, target in _list_entries(model_admin, option):
                    for path in _paths(target):
                        secret = _secret_in_path(model, path)
                        if secret is not None:
                            errors.append(
                                Error(
                                    f"{type(model_admin).__name__}.{option} names the secret field {secret}"
                                    f" ({entry!r}): its list would answer questions about the secret.",
                                    hint="Remove it; a secret field takes part in no search, sort, filter or column.",
                                    obj=type(model_admin),
                                    id="wpfleet.E001",
                                )
                            )
    return errors
