# shellcheck shell=bash disable=SC2034 # variables are used by the sourcing scripts
# Shared helpers for lab/up.sh, lab/down.sh and lab/status.sh.
# Sourced, never executed: callers set `set -euo pipefail` themselves.

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$LAB_DIR/.." && pwd)"
VAR_DIR="$REPO/var"
ENV_FILE="$REPO/.env"

# Debian's docker.io CLI (20.10) matches the engine we start; a newer CLI may
# sit earlier in PATH (/usr/local/bin/docker), so name the binary explicitly
# when it is there.
if [[ -x /usr/bin/docker ]]; then
	DOCKER=/usr/bin/docker
else
	DOCKER=docker
fi
# BuildKit wants to pull its frontend image; the legacy builder works offline.
export DOCKER_BUILDKIT=0

# Interface shared with the Django side: keep these names exactly.
IMG_BASE=wpfleet-lab/base:bookworm
IMG_WORDPRESS=wpfleet-lab/wordpress:php8.2-fpm
# the same with PHP 8.4 (Debian trixie's), on a trixie rootfs of its own
IMG_WORDPRESS_PHP84=wpfleet-lab/wordpress:php8.4-fpm
IMG_BASE_TRIXIE=wpfleet-lab/base:trixie
IMG_NGINX=wpfleet-lab/nginx:alpine
IMG_CADDY=wpfleet-lab/caddy:2
IMG_MARIADB=wpfleet-lab/mariadb:10.11
IMG_SFTP=wpfleet-lab/sftp:bookworm
# Each derived image (all but the base) also gets an immutable tag naming its
# recipe (label wpfleet.recipe), e.g. $IMG_WORDPRESS-r<hash>. .env points the
# panel at those: what a site runs changes only when .env does.
pinned_image() { printf '%s-r%s\n' "$1" "$2"; } # TAG RECIPE-HASH
BACKEND_NETWORK=wp_backend
MARIADB_CONTAINER=wpfleet-mariadb
CADDY_CONTAINER=caddy
# the SFTP backup host stand-in (restic's sftp backend)
SFTP_CONTAINER=wpfleet-sftp
INFRA_CONTAINERS=("$CADDY_CONTAINER" "$MARIADB_CONTAINER" "$SFTP_CONTAINER")
# the local restic repository (a directory on the host)
BACKUP_REPOSITORY="$VAR_DIR/backups/restic"

log() { printf 'lab: %s\n' "$*"; }
warn() { printf 'lab: WARNING: %s\n' "$*" >&2; }
die() {
	printf 'lab: ERROR: %s\n' "$*" >&2
	exit 1
}

dk() { "$DOCKER" "$@"; }

engine_up() { dk info >/dev/null 2>&1; }

# Where lab/up.sh installs the containerd shim wrapper (lab/shim/).
SHIM_DIR=/usr/local/lib/wpfleet/shim

# Does the running containerd find the wrapper first? (An engine started by
# an older lab/up.sh, or by hand, does not.)
engine_uses_shim() {
	local pid
	pid=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null) || return 1
	tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "PATH=$SHIM_DIR:.*"
}

# Run "$@" and report how long it took as "lab: <label> (12.3s)".
timed() {
	local label=$1 start end
	shift
	start=$(date +%s.%N)
	"$@"
	end=$(date +%s.%N)
	log "$(awk -v l="$label" -v s="$start" -v e="$end" 'BEGIN { printf "%s (%.1fs)", l, e - s }')"
}

# Prints the container's state (running, exited, created, ...) or "missing".
container_state() {
	local state
	# (the CLI prints an empty line even for a missing container)
	state=$(dk container inspect -f '{{.State.Status}}' "$1" 2>/dev/null) || state=missing
	echo "$state"
}

image_exists() { dk image inspect "$1" >/dev/null 2>&1; }

# Value of KEY in .env ("" when absent). Last assignment wins, like dotenv.
env_get() {
	[[ -f $ENV_FILE ]] || return 0
	sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# IP of the default bridge's gateway (docker0), where site containers reach
# services on the host.
bridge_gateway() {
	dk network inspect bridge -f '{{(index .IPAM.Config 0).Gateway}}'
}
