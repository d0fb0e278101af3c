"""wpfleet's own checks for `manage.py check --deploy`."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register

# An image reference fixed to one build: by registry digest, or by the lab's
# recipe-hash tag (lab/up.sh tags each stand-in image with its recipe's hash).
PINNED_IMAGE = re.compile(r".+@sha256:[0-9a-f]{64}|.+:[^:/@]*-r[0-9a-f]{16}")


@register(Tags.security, deploy=True)
def images_are_pinned(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    warnings = []
    for name in ("WPFLEET_PHP_IMAGE", "WPFLEET_NGINX_IMAGE"):
        image = getattr(settings, name)
        if not PINNED_IMAGE.fullmatch(image):
            warnings.append(
                Warning(
                    f"{name}={image!r} is a mutable tag: a new push would change what new sites run.",
                    hint="Pin it by digest (name:tag@sha256:...) or use the lab's recipe-hash tag.",
                    id="wpfleet.W001",
                )
            )
    return warnings
