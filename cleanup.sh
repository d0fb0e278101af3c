#!/usr/bin/env bash
# Clears zombie sites and leftovers (see sites/zombies.py). Pass --dry-run to look first.
set -euo pipefail
cd "$(dirname "$0")"
exec .venv/bin/python manage.py cleanup_zombies "$@"
