"""Settings for the test suite: ``hosting.settings``, plus throwaway values for
the two secrets that have no default, when neither the environment nor
``.env`` gives them, so that the tests that need no lab run on a clean clone
(``make test-unit``). A lab's ``.env`` values are used as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from hosting import env as envmod

_env = envmod.load(Path(__file__).resolve().parent.parent)
if not _env.raw("DJANGO_SECRET_KEY"):
    os.environ["DJANGO_SECRET_KEY"] = "tests-only-not-a-secret-" + "k" * 40
if not _env.raw("WPFLEET_ENCRYPTION_KEYS"):
    # A fixed, public key: the test databases hold no real secret.
    os.environ["WPFLEET_ENCRYPTION_KEYS"] = "dGVzdHMtb25seS1ub3QtYS1zZWNyZXQta2V5LTAwMDA="

# Small backend shards (sites.provisioning.shards), so that the suite's
# sites spread over several and new shards are made and joined by Caddy.
os.environ.setdefault("WPFLEET_BACKEND_SHARD_SIZE", "3")

from hosting.settings import *  # noqa: E402,F403
