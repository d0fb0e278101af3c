#!/usr/bin/env bash
# lab/status.sh - show the state of the lab: engine, images, infrastructure
# containers and how many wpfleet-managed containers exist.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
	if ! engine_up; then
		echo "engine:     not answering (lab/up.sh starts it)"
		return 0
	fi
	echo "engine:     Docker $(dk version -f '{{.Server.Version}}'), default runtime $(dk info -f '{{.DefaultRuntime}}'), docker0 gateway $(bridge_gateway)"
	local wrapper='not in use (a shim a container)' shims
	if engine_uses_shim; then wrapper="$SHIM_DIR in use (a site's two containers share one)"; fi
	shims=$(pgrep -c -f '^/usr/bin/containerd-shim-runc-v2 ' || true)
	echo "shims:      $shims containerd shims for $(dk ps -q | wc -l) running containers; wrapper $wrapper"

	local img
	for img in "$IMG_BASE" "$IMG_WORDPRESS" "$IMG_NGINX" "$IMG_CADDY" "$IMG_MARIADB" "$IMG_SFTP"; do
		if image_exists "$img"; then
			printf 'image:      %-36s %s\n' "$img" \
				"$(dk image inspect -f '{{index .Config.Labels "wpfleet.recipe"}} {{.Created}}' "$img" | cut -c1-36)"
		else
			printf 'image:      %-36s missing\n' "$img"
		fi
	done

	if dk network inspect "$BACKEND_NETWORK" >/dev/null 2>&1; then
		echo "network:    $BACKEND_NETWORK present"
	else
		echo "network:    $BACKEND_NETWORK missing"
	fi

	local name info
	for name in "${INFRA_CONTAINERS[@]}"; do
		info=$(dk container inspect -f '{{.State.Status}} (since {{.State.StartedAt}})' "$name" 2>/dev/null) ||
			info=missing
		printf 'container:  %-16s %s\n' "$name" "$info"
	done

	local repo=missing sftp
	if [[ -f $BACKUP_REPOSITORY/config ]]; then repo=initialised; fi
	sftp=$(dk port "$SFTP_CONTAINER" 22/tcp 2>/dev/null | head -n 1) || true
	echo "backups:    restic repository $BACKUP_REPOSITORY ($repo); SFTP host ${sftp:-not published}"

	local total running
	total=$(dk ps -aq --filter label=wpfleet.owner=wpfleet | wc -l)
	running=$(dk ps -q --filter label=wpfleet.owner=wpfleet | wc -l)
	echo "wpfleet:    $total containers labelled wpfleet.owner=wpfleet ($running running)"
}

main "$@"
