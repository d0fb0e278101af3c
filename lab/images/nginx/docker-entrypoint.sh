#!/bin/sh
# Entrypoint of wpfleet-lab/nginx:alpine, as in the official nginx image:
# when starting nginx, run the executable /docker-entrypoint.d/*.sh scripts
# in order (unless NGINX_ENTRYPOINT_QUIET_LOGS silences the chatter), then
# exec the command.
set -e

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
	for f in /docker-entrypoint.d/*.sh; do
		[ -e "$f" ] || continue
		if [ -x "$f" ]; then
			entrypoint_log "$0: Launching $f"
			"$f"
		else
			entrypoint_log "$0: Ignoring $f, not executable"
		fi
	done
	entrypoint_log "$0: Configuration complete; ready for start up"
fi

exec "$@"
