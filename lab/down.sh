#!/usr/bin/env bash
# lab/down.sh - stop the lab's shared infrastructure (caddy, wpfleet-mariadb,
# wpfleet-sftp).
#
# Containers are stopped, not removed: their data (databases, routes and
# certificates, the SFTP host's backups) lives in named volumes and lab/up.sh
# starts them again. The local restic repository (var/backups/restic) is a
# directory on the host and is not touched. Site containers created by
# wpfleet are left alone, and so is dockerd (other containers may use it;
# stopping a daemon started by hand is `kill $(cat /var/run/docker.pid)`).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
	if ! engine_up; then
		log "the Docker engine is not running; nothing to stop"
		return 0
	fi
	local name state
	for name in "${INFRA_CONTAINERS[@]}"; do
		state=$(container_state "$name")
		case $state in
		running | restarting | paused)
			log "stopping $name"
			dk stop "$name" >/dev/null
			;;
		*) log "$name: $state" ;;
		esac
	done
	log "down (data kept in volumes; dockerd left running; lab/up.sh brings it back)"
}

main "$@"
