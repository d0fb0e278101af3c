#!/usr/bin/env bash
# Starts and stops the panel: the web server (gunicorn) and the django-q2
# worker cluster, both in the background with logs under var/log/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=$REPO/.venv/bin/python
RUN=$REPO/var/run
LOG=$REPO/var/log
WEB_BIND=${WPFLEET_WEB_BIND:-127.0.0.1:8000}
# Everything the panel writes (control database, logs, locks) is its own.
umask 077
mkdir -p "$RUN" "$LOG"
chmod 700 "$REPO/var"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {  # stop PIDFILE NAME: TERM, then KILL after 15 s
  local pidfile=$1 name=$2 pid
  if ! alive "$pidfile"; then rm -f "$pidfile"; return; fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "panel: $name did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$pidfile"
  echo "panel: $name stopped"
}

up() {
  local started=$SECONDS
  "$PY" manage.py migrate --noinput -v 0
  "$PY" manage.py collectstatic --noinput -v 0
  "$PY" manage.py ensure_superuser
  if alive "$RUN/web.pid"; then
    echo "panel: web already running (pid $(cat "$RUN/web.pid"))"
  else
    "$REPO/.venv/bin/gunicorn" hosting.wsgi -b "$WEB_BIND" --workers 3 --threads 4 --timeout 60 \
      --pid "$RUN/web.pid" --daemon \
      --access-logfile "$LOG/web-access.log" --error-logfile "$LOG/web.log"
  fi
  if alive "$RUN/worker.pid"; then
    echo "panel: worker already running (pid $(cat "$RUN/worker.pid"))"
  else
    nohup "$PY" manage.py run_worker >>"$LOG/worker.log" 2>&1 </dev/null &
    echo $! >"$RUN/worker.pid"
  fi
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://$WEB_BIND/admin/login/" && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://$WEB_BIND/admin/login/" || { echo "panel: web did not answer; see $LOG/web.log"; exit 1; }
  alive "$RUN/worker.pid" || { echo "panel: worker did not start; see $LOG/worker.log"; exit 1; }
  local user password
  user=$(grep -E '^WPFLEET_ADMIN_USER=' .env | cut -d= -f2-)
  password=$(grep -E '^WPFLEET_ADMIN_PASSWORD=' .env | cut -d= -f2-)
  cat <<TXT

wpfleet is up ($((SECONDS - started)) s for the panel).
  admin:   http://$WEB_BIND/admin/   user: ${user:-admin}   password: $password
  API:     http://$WEB_BIND/api/docs/   (token: .venv/bin/python manage.py drf_create_token ${user:-admin})
  sites:   https://<name>.$(grep -E "^WPFLEET_BASE_DOMAIN=" .env | cut -d= -f2-)/ through Caddy at $(grep -E "^WPFLEET_CADDY_URL=" .env | cut -d= -f2-) (CA: var/lab-ca.crt)
  logs:    var/log/web.log var/log/worker.log   config: .env
TXT
}

down() {
  stop "$RUN/worker.pid" worker
  stop "$RUN/web.pid" web
}

status() {
  if alive "$RUN/web.pid"; then echo "panel web:    running (pid $(cat "$RUN/web.pid")) on http://$WEB_BIND/"; else echo "panel web:    stopped"; fi
  if alive "$RUN/worker.pid"; then echo "panel worker: running (pid $(cat "$RUN/worker.pid"))"; else echo "panel worker: stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
