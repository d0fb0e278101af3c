#!/usr/bin/env bash
# Runs the test suite on the chosen control database: sqlite (default) or mariadb.
set -euo pipefail
cd "$(dirname "$0")/.."
db=${1:-sqlite}; shift || true
env_value() { grep -E "^$1=" .env | tail -n1 | cut -d= -f2-; }
case "$db" in
  sqlite) export DATABASE_URL="sqlite:///var/wpfleet.sqlite3" ;;
  mariadb)
    export DATABASE_URL="mysql://wpfleet:$(env_value WPFLEET_CONTROL_DB_PASSWORD)@$(env_value WPFLEET_DB_ADMIN_HOST):$(env_value WPFLEET_DB_ADMIN_PORT)/wpfleet"
    ;;
  *) echo "DB must be sqlite or mariadb, not '$db'" >&2; exit 2 ;;
esac
# Tests label what they create with their own owner, so that they never touch
# (nor clean up) the sites of a panel running beside them.
export WPFLEET_OWNER=${WPFLEET_TEST_OWNER:-wpfleet-test}
mkdir -p var/test-artifacts
echo "tests: control database $db"
exec .venv/bin/python -m pytest "$@"
