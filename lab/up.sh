#!/usr/bin/env bash
# lab/up.sh - bring the wpfleet lab up (idempotent; fast when all is there).
#
# The lab is a stand-in for a production host: a Docker engine, the images
# the provisioner uses (built offline from Debian packages, since no registry
# is reachable here), a shared MariaDB "DB host", the Caddy front proxy and
# backup targets for restic (a local repository and an SFTP host).
# Every step checks first and only does what is missing:
#   1. host packages (apt), 1b. the sites' quota filesystem, 1c. kernel
#   limits (pid_max), 1d. the containerd shim wrapper (lab/shim/),
#   1e. cgroup controllers crun can use, 2. dockerd (--live-restore, the
#   wrapper first on its PATH, crun its default runtime),
#   3. .env (and the backup secrets it names), 4. images, 5. network
#   wp_backend, 6. wpfleet-mariadb, 7. caddy, 8. backups (wpfleet-sftp,
#   restic repositories).
# Run as root. Exits non-zero with a message on the first failure.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# die() explains expected failures; this names the step of any other one.
STEP=start
# shellcheck disable=SC2154 # rc is assigned inside the trap
trap 'rc=$?; if ((rc != 0)); then printf "lab: ERROR: up.sh failed during: %s (exit %s)\n" "$STEP" "$rc" >&2; fi' EXIT

# restic, mariadb-dump/mariadb: the panel's backups run on the host;
# openssh-client: ssh-keygen here, and the ssh restic's sftp backend runs.
# wrk: the bench's serving section (bench/sections/serving.py).
# btrfs-progs: the sites' quota filesystem (1b, sites/infra/quota.py).
# crun: the engine's default OCI runtime (2, see DOCKERD_ARGS).
HOST_PACKAGES=(docker.io debootstrap iptables iproute2 curl openssl chromium libnss3-tools
	default-libmysqlclient-dev pkg-config restic mariadb-client openssh-client wrk btrfs-progs crun)
DOCKERD_LOG="$VAR_DIR/log/dockerd.log"
# Docker's default pools allow only ~30 user networks; /28 networks from
# 10.200/16 allow 4096. No site takes one (a site's nginx is on a backend
# shard, its PHP-FPM in that nginx's network namespace): the pool remains the
# engine's for other networks (the tests', an older wpfleet's per-site ones
# until the reconciler moves those sites). docker0 gets a fixed, conventional
# address so the sites' DB host (WPFLEET_SITE_DB_HOST) stays stable.
# shellcheck disable=SC2054 # the commas belong to one argument
# crun, not runc, starts and execs the containers: runc (1.1) reads the
# host's whole mount table about ten times a container start, and at a
# thousand sites that table is 6,000 lines; among 1,000 site-shaped pairs
# of containers, starting a pair's two took 0.83 s more than on an empty
# host with runc, 0.20 s with crun (python -m bench.engine;
# docs/performance.md, issue 14). Containers made before keep their runtime.
RUNTIME=crun
DOCKERD_ARGS=(--default-address-pool base=10.200.0.0/16,size=28 --bip 172.17.0.1/16 --live-restore
	--add-runtime "$RUNTIME=/usr/bin/$RUNTIME" --default-runtime "$RUNTIME")
# wp_backend (backend shard 0) joins Caddy and the sites' nginx: it gets a
# /16 of its own, outside the pool (a network from the pool is a /28: 13
# containers); WPFLEET_DB_USER_HOST's default covers it.
BACKEND_SUBNET=10.201.0.0/16
ENGINE_TIMEOUT=60
# containerd finds its runc shim on its PATH, which is dockerd's: the lab's
# wrapper (lab/shim/, installed in SHIM_DIR: lib.sh) is first there, and puts
# a site's PHP-FPM container under its nginx's shim (one shim a site, not two).
SHIM_SRC="$LAB_DIR/shim"
ENGINE_START_ATTEMPTS=5
DB_TIMEOUT=120
CADDY_TIMEOUT=30
# Where the host reaches Caddy (site URLs carry no port with the defaults).
CADDY_HTTP_PUBLISH=${WPFLEET_LAB_HTTP_PUBLISH:-127.0.0.1:80}
CADDY_HTTPS_PUBLISH=${WPFLEET_LAB_HTTPS_PUBLISH:-127.0.0.1:443}
# The lab's CA (Caddy's local_certs root), for clients that must trust the sites.
LAB_CA="$VAR_DIR/lab-ca.crt"
PANEL_DB_USER=wpfleet_panel
DB_SECRETS_DIR="$VAR_DIR/lab/secrets"
# Backup targets: the local restic repository (BACKUP_REPOSITORY, lib.sh),
# and the SFTP host stand-in (wpfleet-sftp) published on loopback only, like
# a backup server only this host may reach. The repositories' password, the
# client key and the server's host key are lab secrets.
BACKUP_PASSWORD_FILE="$DB_SECRETS_DIR/backup_password"
BACKUP_SFTP_KEY="$DB_SECRETS_DIR/backup_sftp_key"
BACKUP_KNOWN_HOSTS="$DB_SECRETS_DIR/backup_known_hosts"
SFTP_HOST_KEY="$DB_SECRETS_DIR/sftp_host_key"
SFTP_PUBLISH=${WPFLEET_LAB_SFTP_PUBLISH:-127.0.0.1:2222}
SFTP_HOST=${SFTP_PUBLISH%:*}
# published on all addresses: clients still use loopback
if [[ $SFTP_HOST == 0.0.0.0 ]]; then SFTP_HOST=127.0.0.1; fi
SFTP_PORT=${SFTP_PUBLISH##*:}
SFTP_USER=backup
SFTP_TIMEOUT=30
# set when this run generated the backup password (an existing repository
# then has another one)
BACKUP_PASSWORD_NEW=''

# --- 1. host packages ---------------------------------------------------------

ensure_packages() {
	local p missing=()
	for p in "${HOST_PACKAGES[@]}"; do
		if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
			missing+=("$p")
		fi
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	log "installing ${missing[*]} (log: $VAR_DIR/log/apt.log)"
	{
		apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	} >"$VAR_DIR/log/apt.log" 2>&1 || {
		tail -n 20 "$VAR_DIR/log/apt.log" >&2
		die "apt-get failed to install: ${missing[*]}"
	}
}

# --- 1b. the sites' quota filesystem ---------------------------------------------
#
# Each site's files are a btrfs subvolume under QUOTA_ROOT, limited by btrfs
# simple quotas (sites/infra/quota.py says why those). Here the filesystem is
# a sparse image on a loop device; production mounts a partition there. The
# step runs before the engine, so after a reboot the filesystem is back
# before a site's container starts; the bare mount point is immutable, so
# nothing is ever written into it while the filesystem is not mounted (a
# volume that binds a site's directory then fails to mount instead).
QUOTA_ROOT=${WPFLEET_QUOTA_ROOT:-$(env_get WPFLEET_QUOTA_ROOT)}
QUOTA_ROOT=${QUOTA_ROOT:-/var/lib/wpfleet/sites}
QUOTA_IMAGE=${WPFLEET_LAB_QUOTA_IMAGE:-/var/lib/wpfleet/quota/sites.btrfs}
# sparse: the host's disk holds only what the sites wrote (the sum of their
# limits may exceed both this size and the host's free space)
QUOTA_FS_SIZE=${WPFLEET_LAB_QUOTA_FS_SIZE:-200G}

# The loop device attached to the lab's image ("" when none).
quota_loop() {
	losetup --list --noheadings --output NAME --associated "$QUOTA_IMAGE" 2>/dev/null | head -n 1
}

# The quota mode of the filesystem at QUOTA_ROOT: squota, qgroup, or "" (off).
quota_mode() {
	local uuid dir
	uuid=$(btrfs filesystem show "$QUOTA_ROOT" | sed -n 's/.*uuid: *\([0-9a-f-]*\).*/\1/p' | head -n 1)
	[[ -n $uuid ]] || die "cannot read the btrfs filesystem id of $QUOTA_ROOT"
	dir=/sys/fs/btrfs/$uuid/qgroups
	if [[ -f $dir/mode ]]; then
		cat "$dir/mode"
	elif [[ -d $dir ]]; then
		echo qgroup
	fi
}

# btrfs-progs 6.2 (bookworm) cannot enable simple quotas: its ioctl can
# (BTRFS_IOC_QUOTA_CTL, BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA; Linux 6.7 or later).
enable_simple_quota() {
	python3 - "$QUOTA_ROOT" <<-'EOF'
		import fcntl, os, struct, sys
		fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
		fcntl.ioctl(fd, 0xC0109428, bytearray(struct.pack("QQ", 4, 0)))
	EOF
}

# A thousand sites are two thousand containers, each with a containerd shim
# of about a dozen threads, and every thread takes a pid: the kernel's
# default pid_max (32,768) runs out near a thousand sites, and then forks
# fail anywhere on the host. 4,194,304 is the most a 64-bit kernel allows.
PID_MAX=4194304
# Every site takes three entries of the kernel's IPv4 neighbour (ARP) table,
# one table for all network namespaces: Caddy's entry for the site's nginx,
# and nginx's (PHP-FPM's too) for Caddy and for its shard's gateway. At the
# default gc_thresh3 (1,024) the table fills near 340 busy sites; then
# addresses go unresolved and Caddy's connections to some sites time out
# (502). The panel counts this limit among its addresses
# (sites.ops.capacity); these values leave room for about 5,400 sites.
NEIGH_THRESH=(4096 8192 16384)
ensure_kernel_limits() {
	local current i
	current=$(</proc/sys/kernel/pid_max)
	if ((current < PID_MAX)); then
		log "kernel.pid_max $current -> $PID_MAX"
		echo "$PID_MAX" >/proc/sys/kernel/pid_max
	fi
	for i in 3 2 1; do # the hard limit first: never below the soft ones
		current=$(<"/proc/sys/net/ipv4/neigh/default/gc_thresh$i")
		if ((current < NEIGH_THRESH[i - 1])); then
			log "net.ipv4.neigh.default.gc_thresh$i $current -> ${NEIGH_THRESH[i - 1]}"
			echo "${NEIGH_THRESH[i - 1]}" >"/proc/sys/net/ipv4/neigh/default/gc_thresh$i"
		fi
	done
}

ensure_quota_fs() {
	local want loop out mode
	[[ $QUOTA_FS_SIZE =~ ^[0-9]+[KMGT]?$ ]] || die "WPFLEET_LAB_QUOTA_FS_SIZE=$QUOTA_FS_SIZE: give a size like 200G"
	want=$(numfmt --from=iec "$QUOTA_FS_SIZE")
	if ! mountpoint -q "$QUOTA_ROOT"; then
		mkdir -p "$QUOTA_ROOT"
		(umask 077 && mkdir -p "$(dirname "$QUOTA_IMAGE")")
		[[ -z $(ls -A "$QUOTA_ROOT") ]] || die "$QUOTA_ROOT is not mounted but holds files: move them away first"
		chattr +i "$QUOTA_ROOT" || warn "cannot make the bare mount point $QUOTA_ROOT immutable"
		if [[ ! -f $QUOTA_IMAGE ]]; then
			log "creating the sites' quota filesystem $QUOTA_IMAGE ($QUOTA_FS_SIZE, sparse)"
			rm -f "$QUOTA_IMAGE.new"
			truncate -s "$want" "$QUOTA_IMAGE.new"
			out=$(mkfs.btrfs -q -L wpfleet-sites "$QUOTA_IMAGE.new" 2>&1) || {
				printf '%s\n' "$out" >&2
				die "mkfs.btrfs $QUOTA_IMAGE.new failed"
			}
			mv "$QUOTA_IMAGE.new" "$QUOTA_IMAGE"
		fi
		loop=$(quota_loop)
		if [[ -z $loop ]]; then loop=$(losetup --find --show "$QUOTA_IMAGE"); fi
		log "mounting $QUOTA_IMAGE ($loop) at $QUOTA_ROOT"
		mount -t btrfs -o noatime "$loop" "$QUOTA_ROOT"
	fi
	[[ $(findmnt -n -o FSTYPE --mountpoint "$QUOTA_ROOT") == btrfs ]] || die "$QUOTA_ROOT is mounted, but not btrfs"
	mode=$(quota_mode)
	case $mode in
	squota) ;;
	'')
		# simple quotas count only what is written after they are on
		[[ -z $(btrfs subvolume list "$QUOTA_ROOT") ]] ||
			die "$QUOTA_ROOT has subvolumes but no quotas: enabling them now would not count their data"
		log "enabling btrfs simple quotas on $QUOTA_ROOT"
		enable_simple_quota || die "cannot enable btrfs simple quotas on $QUOTA_ROOT (Linux 6.7 or later needed)"
		;;
	*) die "$QUOTA_ROOT has btrfs quotas in mode $mode, not simple quotas: a site could write past its limit (btrfs quota disable $QUOTA_ROOT, then run this again)" ;;
	esac
	chmod 755 "$QUOTA_ROOT"
	# WPFLEET_LAB_QUOTA_FS_SIZE grew: grow the image and the filesystem (never shrunk)
	loop=$(quota_loop)
	if [[ -n $loop && $(findmnt -n -o SOURCE --mountpoint "$QUOTA_ROOT") == "$loop" ]] &&
		(($(stat -c %s "$QUOTA_IMAGE") < want)); then
		log "growing $QUOTA_IMAGE to $QUOTA_FS_SIZE"
		truncate -s "$want" "$QUOTA_IMAGE"
		losetup --set-capacity "$loop"
		btrfs filesystem resize max "$QUOTA_ROOT" >/dev/null
	fi
}

# crun runs on cgroup v1 or v2 but refuses a hybrid host whose cgroup v2
# hierarchy holds a controller ("cgroups in hybrid mode not supported"):
# here hugetlb, which no v1 hierarchy was mounted for. A controller that the
# v2 hierarchy holds but gives to no cgroup (cgroup.subtree_control empty)
# can be mounted as a v1 hierarchy of its own, as its siblings are; then the
# host is plain v1 to crun. One the v2 hierarchy uses stays: that host needs
# its boot configuration changed, which this script does not do.
ensure_cgroup_layout() {
	local unified=/sys/fs/cgroup/unified controller
	[[ $(stat -f -c %T /sys/fs/cgroup) == tmpfs ]] || return 0 # cgroup v2 only: crun's own
	[[ -f $unified/cgroup.controllers ]] || return 0            # v1 only
	[[ -z $(<"$unified/cgroup.controllers") ]] && return 0
	[[ -z $(<"$unified/cgroup.subtree_control") ]] ||
		die "cgroup v2 controllers $(<"$unified/cgroup.subtree_control") are in use at $unified: crun cannot run on this hybrid host (boot it with cgroup v2 only, or all controllers on v1)"
	for controller in $(<"$unified/cgroup.controllers"); do
		log "mounting the $controller controller as a cgroup v1 hierarchy (/sys/fs/cgroup/$controller), for crun"
		mkdir -p "/sys/fs/cgroup/$controller"
		mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller"
	done
}

# --- 2. Docker engine -----------------------------------------------------------

# Is the process named in pid file FILE alive and called NAME? A zombie
# (killed, not yet reaped) or a reused pid counts as dead.
pid_alive() {
	local file=$1 name=$2
	[[ -f $file ]] || return 1
	proc_alive "$(<"$file")" "$name"
}

# Is process PID alive and called NAME (not a zombie)?
proc_alive() {
	local pid=$1 name=$2 stat
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
	# /proc/PID/stat is "PID (COMM) STATE ..."
	[[ $stat == "$pid ($name) "* && $stat != "$pid ($name) Z"* ]]
}

# A stale pid file (dockerd killed, machine restarted) makes the daemon
# refuse to start; a stale containerd.pid makes it wait for a dead containerd.
remove_stale_pidfiles() {
	local file name
	for file in /var/run/docker.pid:dockerd /var/run/docker/containerd/containerd.pid:containerd; do
		name=${file##*:}
		file=${file%:*}
		if [[ -f $file ]] && ! pid_alive "$file" "$name"; then
			log "removing stale $file"
			rm -f "$file"
		fi
	done
}

ensure_engine() {
	if engine_up; then
		ensure_live_restore
		return 0
	fi
	[[ -x /usr/sbin/dockerd ]] || die "/usr/sbin/dockerd missing (package docker.io)"
	local i starts=0 stalled=0 launched='' log_at=0 cleaned
	for ((i = 0; i < ENGINE_TIMEOUT * 2; i++)); do
		engine_up && return 0
		# (the one started here counts before it has written its pid file)
		if pid_alive /var/run/docker.pid dockerd || { [[ -n $launched ]] && proc_alive "$launched" dockerd; }; then
			((i % 10 == 0)) && log "dockerd (pid $(</var/run/docker.pid)) is running but not answering yet; waiting"
		elif ((stalled < ENGINE_START_ATTEMPTS)); then
			# A dockerd that exits while starting is started again, as systemd's
			# docker.service does: after a power cut for the sites, containerd
			# first cleans up every dead shim, one after another, and dockerd
			# waits 15 s for it ("timeout waiting for containerd to start"):
			# about 270 shims a start here, 2,020 after a power cut of 1,010
			# sites. Each start gets further through them, so only a start
			# that cleaned up none counts against ENGINE_START_ATTEMPTS.
			if ((starts > 0)); then
				cleaned=$(tail -c +"$((log_at + 1))" "$DOCKERD_LOG" | grep -c 'cleaning up dead shim' || true)
				((cleaned > 0)) || stalled=$((stalled + 1))
				log "dockerd exited while starting, after cleaning up $cleaned dead shims (${DOCKERD_LOG}: $(tail -n 1 "$DOCKERD_LOG" | cut -c1-120)); starting it again"
			fi
			log_at=$(stat -c %s "$DOCKERD_LOG" 2>/dev/null || echo 0)
			remove_stale_pidfiles
			log "starting dockerd (log: $DOCKERD_LOG)"
			# setsid: the engine must outlive this script and its terminal
			# 9>&-: the daemon (and its container shims) must not inherit the lock.
			PATH="$SHIM_DIR:$PATH" setsid /usr/sbin/dockerd "${DOCKERD_ARGS[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
			launched=$!
			starts=$((starts + 1))
			i=0
		else
			tail -n 20 "$DOCKERD_LOG" >&2 || true
			die "dockerd exited while starting, $starts times, $stalled of them without cleaning up a dead shim (see $DOCKERD_LOG)"
		fi
		sleep 0.5
	done
	tail -n 20 "$DOCKERD_LOG" >&2 || true
	die "the Docker engine did not answer within ${ENGINE_TIMEOUT}s (see $DOCKERD_LOG)"
}

# The shim wrapper, where containerd will find it. A fixed path outside the
# checkout: containerd records it in every container's bundle and calls it
# again for that container's clean-up, whatever happens to this checkout.
install_shim() {
	local file
	for file in containerd-shim-runc-v2 group.py; do
		if ! cmp -s "$SHIM_SRC/$file" "$SHIM_DIR/$file"; then
			log "installing $SHIM_DIR/$file"
			install -D -m 0755 "$SHIM_SRC/$file" "$SHIM_DIR/$file.new"
			mv -f "$SHIM_DIR/$file.new" "$SHIM_DIR/$file"
		fi
	done
}

# With --live-restore the sites' containers outlive the engine: a dockerd
# that crashed or was stopped comes back to them still running, instead of
# every one of them Exited for the reconciler to start (docs/performance.md).
# An engine started without it (by an older lab/up.sh) is restarted once,
# cleanly: its containers stop, and come back with the panel's reconciler.
# An engine without the shim wrapper on its PATH, or with another default
# runtime, is restarted the same way (its containers keep running, under
# their own shims and runtime, until they are made again).
ensure_live_restore() {
	local why=''
	[[ $(dk info -f '{{.LiveRestoreEnabled}}' 2>/dev/null) == true ]] || why='without --live-restore'
	engine_uses_shim || why="${why:+$why and }without $SHIM_DIR on its PATH"
	[[ $(dk info -f '{{.DefaultRuntime}}' 2>/dev/null) == "$RUNTIME" ]] || why="${why:+$why and }without $RUNTIME as its runtime"
	[[ -z $why ]] && return 0
	pid_alive /var/run/docker.pid dockerd || die "the engine answers $why and not as /var/run/docker.pid: stop it, then run lab/up.sh again"
	log "restarting dockerd (it ran $why)"
	local pid i
	pid=$(</var/run/docker.pid)
	kill -TERM "$pid"
	for ((i = 0; i < ENGINE_TIMEOUT * 2; i++)); do
		pid_alive /var/run/docker.pid dockerd || break
		sleep 0.5
	done
	pid_alive /var/run/docker.pid dockerd && die "dockerd (pid $pid) did not stop within ${ENGINE_TIMEOUT}s"
	ensure_engine
}

# --- 3. .env ----------------------------------------------------------------------

rand_hex() { openssl rand -hex "$1"; }

# KEY VALUE lines for every key the project reads; secrets are fresh each
# call but only used for keys missing from .env. The image keys name the
# pinned tags of the current recipes (see lab_managed_env_key).
env_defaults() {
	local gw=$1
	cat <<-EOF
		DJANGO_SECRET_KEY $(rand_hex 25)
		WPFLEET_BASE_DOMAIN wpfleet.test
		WPFLEET_DB_ADMIN_HOST 127.0.0.1
		WPFLEET_DB_ADMIN_PORT 3306
		WPFLEET_DB_ADMIN_USER $PANEL_DB_USER
		WPFLEET_DB_ADMIN_PASSWORD $(rand_hex 24)
		WPFLEET_LAB_DB_ROOT_PASSWORD $(rand_hex 24)
		WPFLEET_ENCRYPTION_KEYS $(openssl rand -base64 32 | tr '+/' '-_')
		WPFLEET_SITE_DB_HOST $gw:3306
		WPFLEET_CONTROL_DB_PASSWORD $(rand_hex 24)
		WPFLEET_PHP_IMAGE $(pinned_tag wordpress)
		WPFLEET_QUOTA_ROOT $QUOTA_ROOT
		WPFLEET_PHP_VERSIONS 8.2=$(pinned_tag wordpress),8.4=$(pinned_tag wordpress-php8.4)
		WPFLEET_NGINX_IMAGE $(pinned_tag nginx)
		WPFLEET_CADDY_CONTAINER $CADDY_CONTAINER
		WPFLEET_BACKEND_NETWORK $BACKEND_NETWORK
		WPFLEET_CADDY_URL https://$CADDY_HTTPS_PUBLISH
		WPFLEET_CADDY_HTTP_URL http://$CADDY_HTTP_PUBLISH
		WPFLEET_CA_BUNDLE $LAB_CA
		WPFLEET_ADMIN_USER admin
		WPFLEET_ADMIN_PASSWORD $(rand_hex 16)
		WPFLEET_BACKUP_REPOSITORY $BACKUP_REPOSITORY
		WPFLEET_BACKUP_PASSWORD_FILE $BACKUP_PASSWORD_FILE
		WPFLEET_BACKUP_SFTP_KEY_FILE $BACKUP_SFTP_KEY
		WPFLEET_BACKUP_SFTP_KNOWN_HOSTS $BACKUP_KNOWN_HOSTS
		WPFLEET_LAB_SFTP_REPOSITORY $(sftp_repository_url)
	EOF
}

# Keys of .env that the lab keeps current: the pinned tags of the images the
# panel runs sites on follow the recipes (ensure_images builds and tags them).
lab_managed_env_key() {
	case $1 in
	WPFLEET_PHP_IMAGE | WPFLEET_PHP_VERSIONS | WPFLEET_NGINX_IMAGE) return 0 ;;
	# where Caddy is published follows WPFLEET_LAB_HTTP(S)_PUBLISH
	WPFLEET_CADDY_URL | WPFLEET_CADDY_HTTP_URL | WPFLEET_CA_BUNDLE) return 0 ;;
	# the lab's backup secrets, and where wpfleet-sftp is published
	# (WPFLEET_LAB_SFTP_PUBLISH). Not WPFLEET_BACKUP_REPOSITORY: which
	# repository the panel uses (local, the SFTP one, another) is a choice.
	WPFLEET_BACKUP_PASSWORD_FILE | WPFLEET_BACKUP_SFTP_KEY_FILE | WPFLEET_BACKUP_SFTP_KNOWN_HOSTS) return 0 ;;
	WPFLEET_LAB_SFTP_REPOSITORY) return 0 ;;
	*) return 1 ;;
	esac
}

# Create .env or append the keys it lacks; existing values are never touched,
# except those of lab_managed_env_key, rewritten in place when they differ.
ensure_env() {
	local gw=$1 key value defaults added=() updated=()
	# (a failure inside <(...) would go unnoticed: generate first)
	defaults=$(env_defaults "$gw")
	if [[ ! -f $ENV_FILE ]]; then
		(umask 077 && : >"$ENV_FILE")
	fi
	# appending after a last line without newline would glue two keys
	if [[ -s $ENV_FILE && -n $(tail -c 1 "$ENV_FILE") ]]; then echo >>"$ENV_FILE"; fi
	while read -r key value; do
		# a password written into .env itself stays the one used (the
		# settings refuse WPFLEET_BACKUP_PASSWORD and its _FILE together)
		if [[ $key == WPFLEET_BACKUP_PASSWORD_FILE ]] && grep -q '^WPFLEET_BACKUP_PASSWORD=' "$ENV_FILE"; then
			continue
		fi
		if grep -q "^$key=" "$ENV_FILE"; then
			if lab_managed_env_key "$key" && [[ $(env_get "$key") != "$value" ]]; then
				log ".env: $key: $(env_get "$key") -> $value"
				sed -i "s|^$key=.*|$key=$value|" "$ENV_FILE"
				updated+=("$key")
			fi
			continue
		fi
		printf '%s=%s\n' "$key" "$value" >>"$ENV_FILE"
		added+=("$key")
	done <<<"$defaults"
	# keys the panel no longer reads (every site is https since Caddy terminates TLS)
	for key in WPFLEET_SITE_URL_SCHEME; do
		if grep -q "^$key=" "$ENV_FILE"; then
			sed -i "/^$key=/d" "$ENV_FILE"
			log ".env: removed $key (no longer read)"
		fi
	done
	if [[ ${#added[@]} -gt 0 ]]; then log ".env: added ${added[*]}"; fi
	if [[ ${#updated[@]} -gt 0 ]]; then
		log ".env: updated ${updated[*]}; a panel already running keeps the old images until restarted (scripts/panel.sh down && make up)"
	fi
	if [[ $(env_get WPFLEET_SITE_DB_HOST) != "$gw:3306" ]]; then
		warn ".env has WPFLEET_SITE_DB_HOST=$(env_get WPFLEET_SITE_DB_HOST) but docker0's gateway is $gw (MariaDB listens on $gw:3306)"
	fi
}

# The backup secrets, made before .env names them (the settings refuse a
# *_FILE that is not a file): the repositories' password, the SFTP client's
# key pair, the SFTP server's host key and the known_hosts line for it.
# Nothing here is printed; existing files are kept (a new password would
# lock the panel out of the repositories made with the old one).
ensure_backup_secrets() {
	local dir=$DB_SECRETS_DIR line pw
	[[ $SFTP_PUBLISH =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}:[0-9]{1,5}$ ]] ||
		die "WPFLEET_LAB_SFTP_PUBLISH=$SFTP_PUBLISH: expected ADDRESS:PORT, e.g. 127.0.0.1:2222"
	(umask 077 && mkdir -p "$dir")
	chmod 700 "$dir"
	if [[ ! -s $BACKUP_PASSWORD_FILE ]]; then
		log "generating the backup repositories' password ($BACKUP_PASSWORD_FILE)"
		pw=$(rand_hex 32)
		[[ $pw =~ ^[0-9a-f]{64}$ ]] || die "openssl rand did not give a password"
		# (printf is a builtin: the password is on no command line)
		(umask 077 && printf '%s' "$pw" >"$BACKUP_PASSWORD_FILE.tmp")
		mv "$BACKUP_PASSWORD_FILE.tmp" "$BACKUP_PASSWORD_FILE"
		BACKUP_PASSWORD_NEW=yes
	fi
	chmod 600 "$BACKUP_PASSWORD_FILE"
	ensure_ssh_key "$BACKUP_SFTP_KEY" wpfleet-backup
	ensure_ssh_key "$SFTP_HOST_KEY" wpfleet-lab-sftp
	# ssh writes [host]:port for any port but 22
	if [[ $SFTP_PORT == 22 ]]; then line=$SFTP_HOST; else line="[$SFTP_HOST]:$SFTP_PORT"; fi
	line="$line $(cut -d' ' -f1,2 "$SFTP_HOST_KEY.pub")"
	if [[ ! -f $BACKUP_KNOWN_HOSTS || $(<"$BACKUP_KNOWN_HOSTS") != "$line" ]]; then
		log "writing $BACKUP_KNOWN_HOSTS"
		(umask 077 && printf '%s\n' "$line" >"$BACKUP_KNOWN_HOSTS")
	fi
	chmod 600 "$BACKUP_KNOWN_HOSTS"
}

# An ed25519 key pair FILE, FILE.pub (mode 600), made when missing; a lost
# .pub is derived again from the private key.
ensure_ssh_key() {
	local key=$1 comment=$2
	if [[ ! -s $key ]]; then
		log "generating the ssh key $key"
		rm -f "$key" "$key.pub"
		ssh-keygen -q -t ed25519 -N '' -C "$comment" -f "$key" </dev/null
	elif [[ ! -s $key.pub ]]; then
		log "re-deriving $key.pub"
		(umask 077 && ssh-keygen -y -f "$key" >"$key.pub")
	fi
	chmod 600 "$key" "$key.pub"
}

# The SFTP repository's path on the shared host: one per lab checkout (named
# after a hash of its password), so that a clean clone beside this one (CI)
# meets a repository of its own, not one it cannot open.
sftp_repository_path() {
	printf '/srv/backups/restic-%s\n' "$(sha256sum <"$BACKUP_PASSWORD_FILE" | cut -c1-12)"
}

# The SFTP repository as .env names it: restic's URL form, the only one that
# carries the port (the panel turns it into ssh -p).
sftp_repository_url() {
	printf 'sftp://%s@%s:%s/%s\n' "$SFTP_USER" "$SFTP_HOST" "$SFTP_PORT" "$(sftp_repository_path)"
}

# --- 4. images --------------------------------------------------------------------

# Short hash of every file of a recipe directory (plus extra text, e.g. the
# base image's hash, so derived images follow a rebuilt base).
recipe_hash() {
	local dir=$1 extra=${2:-}
	{
		(cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
		printf '%s\n' "$extra"
	} | sha256sum | cut -c1-16
}

image_recipe() {
	dk image inspect -f '{{index .Config.Labels "wpfleet.recipe"}}' "$1" 2>/dev/null || true
}

build_base() {
	local hash=$1 tar="$VAR_DIR/lab/base-$1.tar"
	if [[ ! -s $tar ]]; then
		rm -f "$VAR_DIR"/lab/base-*.tar
		log "building the base rootfs (debootstrap + apt; log: $VAR_DIR/log/lab-build-base.log)"
		"$LAB_DIR/images/base/build-rootfs.sh" "$tar" "$VAR_DIR/lab" >"$VAR_DIR/log/lab-build-base.log" 2>&1 || {
			tail -n 20 "$VAR_DIR/log/lab-build-base.log" >&2
			die "building the base rootfs failed"
		}
	fi
	import_rootfs "$tar" "$IMG_BASE" "$hash"
}

# import_rootfs TAR TAG HASH: a rootfs tarball as image TAG (recipe HASH).
import_rootfs() {
	log "importing $2"
	dk import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' \
		--change "LABEL wpfleet.recipe=$3" \
		"$1" "$2" >/dev/null
}

# $IMG_BASE_TRIXIE, what the PHP 8.4 image is built FROM: a trixie rootfs
# made like the bookworm base, from lab/images/wordpress-php8.4/rootfs
# (its own build-rootfs.sh and packages.txt), only when that recipe changed;
# its tarball stays in var/lab like the bookworm one. (Not trixie's
# php8.4 added to the bookworm base: it needs trixie's libc6, OpenSSL and
# ICU, which would replace the libraries under the base's other packages.)
ensure_trixie_base() {
	local dir="$LAB_DIR/images/wordpress-php8.4/rootfs" hash tar logf="$VAR_DIR/log/lab-build-base-trixie.log"
	hash=$(recipe_hash "$dir")
	[[ $(image_recipe "$IMG_BASE_TRIXIE") != "$hash" ]] || return 0
	# (not base-*.tar: build_base removes those)
	tar="$VAR_DIR/lab/rootfs-trixie-$hash.tar"
	if [[ ! -s $tar ]]; then
		rm -f "$VAR_DIR"/lab/rootfs-trixie-*.tar
		log "building the trixie rootfs (debootstrap + apt; log: $logf)"
		"$dir/build-rootfs.sh" "$tar" "$VAR_DIR/lab" >"$logf" 2>&1 || {
			tail -n 20 "$logf" >&2
			die "building the trixie rootfs failed"
		}
	fi
	import_rootfs "$tar" "$IMG_BASE_TRIXIE" "$hash"
}

# The tag of derived image NAME (its recipe is lab/images/NAME).
derived_tag() {
	case $1 in
	wordpress) echo "$IMG_WORDPRESS" ;;
	wordpress-php8.4) echo "$IMG_WORDPRESS_PHP84" ;;
	nginx) echo "$IMG_NGINX" ;;
	caddy) echo "$IMG_CADDY" ;;
	mariadb) echo "$IMG_MARIADB" ;;
	sftp) echo "$IMG_SFTP" ;;
	*) die "unknown lab image: $1" ;;
	esac
}

# The immutable tag of derived image NAME as its recipe (and the base's)
# stands now; needs no engine, so .env can name it before the build.
pinned_tag() {
	local tag
	tag=$(derived_tag "$1")
	pinned_image "$tag" "$(recipe_hash "$LAB_DIR/images/$1" "$(recipe_extra "$1" "$(recipe_hash "$LAB_DIR/images/base")")")"
}

# recipe_extra NAME BASE-HASH: what derived image NAME's hash also covers
# besides its own recipe: the base's hash; for the PHP 8.4 image, the 8.2
# image's (its WordPress, entrypoint and config come from that image, and the
# base's hash is part of it).
recipe_extra() {
	case $1 in
	wordpress-php8.4) recipe_hash "$LAB_DIR/images/wordpress" "$2" ;;
	*) echo "$2" ;;
	esac
}

# Point PIN at TAG's image (nothing to do when it already does).
pin_image() {
	local tag=$1 pin=$2 id
	id=$(dk image inspect -f '{{.Id}}' "$tag")
	if [[ $(dk image inspect -f '{{.Id}}' "$pin" 2>/dev/null) != "$id" ]]; then
		log "tagging $pin"
		dk tag "$tag" "$pin"
	fi
}

# Remove TAG's pinned tags other than KEEP (older recipes), unless a
# container (a site's php or nginx) still uses the image: it stays, with its
# tag, until a later run finds it unused. Removing the last tag of an image
# deletes the image.
drop_old_pins() {
	local tag=$1 keep=$2 ref refs
	refs=$(dk image ls --format '{{.Repository}}:{{.Tag}}' "${tag%:*}")
	for ref in $refs; do
		[[ $ref != "$keep" && $ref == "$tag"-r* && ${ref#"$tag"-r} =~ ^[0-9a-f]{16}$ ]] || continue
		[[ -z $(dk ps -aq --filter "ancestor=$ref") ]] || continue
		log "removing $ref (an older recipe, used by no container)"
		dk rmi "$ref" >/dev/null || warn "could not remove $ref"
	done
}

build_derived() {
	local name=$1 tag=$2 hash=$3 logf="$VAR_DIR/log/lab-build-$1.log"
	log "building $tag"
	dk build --label "wpfleet.recipe=$hash" -t "$tag" "$LAB_DIR/images/$name" >"$logf" 2>&1 || {
		tail -n 20 "$logf" >&2
		die "building $tag failed (log: $logf)"
	}
}

# The derived images (lab/images/NAME), and their pinned tags as ensure_images
# made them.
# (wordpress before wordpress-php8.4, which is built from it)
DERIVED_IMAGES=(wordpress wordpress-php8.4 nginx caddy mariadb sftp)
CURRENT_PINS=()

# Every derived image is tagged twice: TAG (mutable, the name the lab and
# the docs use) and pinned_image TAG HASH (immutable, the one .env names).
ensure_images() {
	local base_hash hash name tag pin
	base_hash=$(recipe_hash "$LAB_DIR/images/base")
	if [[ $(image_recipe "$IMG_BASE") != "$base_hash" ]]; then build_base "$base_hash"; fi
	for name in "${DERIVED_IMAGES[@]}"; do
		tag=$(derived_tag "$name")
		hash=$(recipe_hash "$LAB_DIR/images/$name" "$(recipe_extra "$name" "$base_hash")")
		pin=$(pinned_image "$tag" "$hash")
		if [[ $(image_recipe "$tag") != "$hash" ]]; then
			if [[ $(image_recipe "$pin") == "$hash" ]]; then
				# back to a recipe whose image is still here (kept by a container)
				log "re-using $pin as $tag"
				dk tag "$pin" "$tag"
			else
				if [[ $name == wordpress-php8.4 ]]; then ensure_trixie_base; fi
				build_derived "$name" "$tag" "$hash"
			fi
		fi
		pin_image "$tag" "$pin"
		CURRENT_PINS+=("$pin")
	done
	# images replaced by a rebuild and never pinned are left untagged: drop
	# them (pinned tags keep theirs: prune without -a takes untagged only)
	dk image prune -f --filter label=wpfleet.recipe >/dev/null
}

# --- 5-8. infrastructure ----------------------------------------------------------

ensure_network() {
	local subnet
	if subnet=$(dk network inspect "$BACKEND_NETWORK" -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' 2>/dev/null); then
		[[ $subnet == "$BACKEND_SUBNET" ]] || migrate_backend_network "$subnet"
		return 0
	fi
	log "creating network $BACKEND_NETWORK ($BACKEND_SUBNET)"
	create_backend_network
}

create_backend_network() {
	dk network create --driver bridge --subnet "$BACKEND_SUBNET" \
		--label wpfleet.lab=infra "$BACKEND_NETWORK" >/dev/null
}

# A wp_backend made by an older lab/up.sh has a /28: re-create it and move
# its containers (the sites' nginx) over with their aliases. Caddy is not
# moved: it is re-created by ensure_caddy, since its published port belongs
# to this network (its spec includes the network's ID).
migrate_backend_network() {
	local old=$1 name alias members=() args
	for name in $(dk network inspect "$BACKEND_NETWORK" -f '{{range .Containers}}{{.Name}} {{end}}'); do
		[[ $name == "$CADDY_CONTAINER" ]] || members+=("$name")
	done
	log "re-creating network $BACKEND_NETWORK: $old -> $BACKEND_SUBNET (moving ${#members[@]} containers)"
	local -A aliases=()
	for name in "${members[@]}"; do
		aliases[$name]=$(dk container inspect -f \
			"{{range (index .NetworkSettings.Networks \"$BACKEND_NETWORK\").Aliases}}{{.}} {{end}}" "$name")
	done
	for name in $(dk network inspect "$BACKEND_NETWORK" -f '{{range .Containers}}{{.Name}} {{end}}'); do
		dk network disconnect -f "$BACKEND_NETWORK" "$name"
	done
	dk network rm "$BACKEND_NETWORK" >/dev/null
	create_backend_network
	for name in "${members[@]}"; do
		args=()
		for alias in ${aliases[$name]}; do
			# Docker adds the short container ID itself
			[[ $(dk container inspect -f '{{.Id}}' "$name") == "$alias"* ]] || args+=(--alias "$alias")
		done
		dk network connect "${args[@]}" "$BACKEND_NETWORK" "$name"
	done
}

# ensure_container NAME IMAGE EXTRA DOCKER-RUN-ARGS...
# Create NAME when missing, start it when stopped (after a crash of dockerd
# even --restart unless-stopped containers come back Exited), and recreate it
# when its image or run arguments changed (label wpfleet.lab.spec), which is
# safe because all their state lives in named volumes. EXTRA is more text
# that should trigger a recreation when it changes (e.g. a bind-mounted
# file's content, since a bind mount keeps pointing at the old inode).
ensure_container() {
	local name=$1 image=$2 extra=$3 spec state
	shift 3
	spec=$({
		printf '%s\n' "$@" "$extra"
		dk image inspect -f '{{.Id}}' "$image"
	} | sha256sum | cut -c1-16)
	state=$(container_state "$name")
	if [[ $state != missing ]]; then
		local current
		current=$(dk container inspect -f '{{index .Config.Labels "wpfleet.lab.spec"}}' "$name")
		if [[ $current != "$spec" ]]; then
			log "recreating $name (image or settings changed)"
			# stop first: rm -f alone kills (SIGKILL), MariaDB deserves its
			# clean shutdown (--stop-timeout)
			dk stop "$name" >/dev/null 2>&1 || true
			dk rm -f "$name" >/dev/null
			state=missing
		fi
	fi
	case $state in
	missing)
		log "creating $name"
		dk run -d --name "$name" --label wpfleet.lab=infra --label "wpfleet.lab.spec=$spec" \
			"$@" "$image" >/dev/null
		;;
	running) ;;
	*)
		log "starting $name (was $state)"
		dk start "$name" >/dev/null
		;;
	esac
}

# An .env from before the panel had its own MariaDB account gave the panel
# root's password: keep that password as root's (the datadir has it) and give
# the panel a fresh account of its own.
migrate_env_db_accounts() {
	[[ -f $ENV_FILE && $(env_get WPFLEET_DB_ADMIN_USER) == root ]] || return 0
	log ".env: the panel used MariaDB's root; moving it to its own account $PANEL_DB_USER"
	if [[ -z $(env_get WPFLEET_LAB_DB_ROOT_PASSWORD) ]]; then
		printf 'WPFLEET_LAB_DB_ROOT_PASSWORD=%s\n' "$(env_get WPFLEET_DB_ADMIN_PASSWORD)" >>"$ENV_FILE"
	fi
	sed -i -e "s/^WPFLEET_DB_ADMIN_USER=.*/WPFLEET_DB_ADMIN_USER=$PANEL_DB_USER/" \
		-e "s/^WPFLEET_DB_ADMIN_PASSWORD=.*/WPFLEET_DB_ADMIN_PASSWORD=$(rand_hex 24)/" "$ENV_FILE"
}

# Root's password reaches the container as a file in a directory only root
# can read, never as an environment variable or an argument (both are shown
# by `docker inspect` and ps). root.cnf lets `docker exec ... mariadb` log in
# without putting the password on a command line.
write_db_secrets() {
	local dir=$DB_SECRETS_DIR pw
	pw=$(env_get WPFLEET_LAB_DB_ROOT_PASSWORD)
	[[ $pw =~ ^[A-Za-z0-9_.,:+=/-]+$ ]] || die "WPFLEET_LAB_DB_ROOT_PASSWORD must be non-empty and free of quotes/spaces"
	(umask 077 && mkdir -p "$dir")
	chmod 700 "$dir"
	if [[ ! -f $dir/root_password || $(<"$dir/root_password") != "$pw" ]]; then
		(umask 077 && printf '%s' "$pw" >"$dir/root_password")
		(umask 077 && printf '[client]\nuser=root\npassword=%s\nhost=127.0.0.1\nprotocol=tcp\n' "$pw" >"$dir/root.cnf")
	fi
}

# MariaDB stands in for a separate DB host: host networking, so site
# containers reach it through the host's docker0 address like they would
# reach another machine, not as a peer on their own network. It listens on
# loopback (Django, the provisioner) and docker0 (sites), never on 0.0.0.0.
# Its two secret files are mounted one by one: the directory also holds the
# backup secrets, which a DB host has no business reading.
ensure_mariadb() {
	local gw=$1
	write_db_secrets
	ensure_container "$MARIADB_CONTAINER" "$IMG_MARIADB" "$(sha256sum <"$DB_SECRETS_DIR/root_password")" \
		--network host --restart unless-stopped --stop-timeout 30 \
		-v wpfleet_mariadb:/var/lib/mysql \
		-v "$DB_SECRETS_DIR/root_password:/run/secrets/wpfleet/root_password:ro" \
		-v "$DB_SECRETS_DIR/root.cnf:/run/secrets/wpfleet/root.cnf:ro" \
		-e MARIADB_ROOT_PASSWORD_FILE=/run/secrets/wpfleet/root_password \
		-e "MARIADB_BIND_ADDRESS=127.0.0.1,$gw"
	wait_for_mariadb
	ensure_control_db
	ensure_panel_account
}

# Run SQL from stdin as root over TCP (the server only has TCP once it is
# fully up: the entrypoint's init server runs without networking).
mariadb_root() {
	dk exec -i "$MARIADB_CONTAINER" mariadb --defaults-extra-file=/run/secrets/wpfleet/root.cnf -N "$@"
}

wait_for_mariadb() {
	local i out
	for ((i = 0; i < DB_TIMEOUT * 2; i++)); do
		if out=$(mariadb_root -e 'SELECT 1' 2>&1 </dev/null); then return 0; fi
		if [[ $out == *"Access denied"* ]]; then
			die "MariaDB rejects WPFLEET_LAB_DB_ROOT_PASSWORD from .env: volume wpfleet_mariadb was initialised with another root password. Restore the old .env value, or drop the data: docker rm -f $MARIADB_CONTAINER && docker volume rm wpfleet_mariadb"
		fi
		sleep 0.5
	done
	dk logs --tail 20 "$MARIADB_CONTAINER" >&2 || true
	die "MariaDB did not accept connections within ${DB_TIMEOUT}s (is port 3306 already taken on the host?)"
}

# The control DB and its account are re-asserted every run, so .env stays
# the source of truth. The panel runs on this host: its accounts are bound to
# 127.0.0.1, not '%'.
ensure_control_db() {
	local pw
	pw=$(env_get WPFLEET_CONTROL_DB_PASSWORD)
	[[ $pw =~ ^[A-Za-z0-9_.,:+=/-]+$ ]] || die "WPFLEET_CONTROL_DB_PASSWORD must be non-empty and free of quotes/spaces"
	mariadb_root <<-SQL
		CREATE DATABASE IF NOT EXISTS \`wpfleet\` CHARACTER SET utf8mb4;
		DROP USER IF EXISTS 'wpfleet'@'%';
		CREATE USER IF NOT EXISTS 'wpfleet'@'127.0.0.1' IDENTIFIED BY '$pw';
		ALTER USER 'wpfleet'@'127.0.0.1' IDENTIFIED BY '$pw';
		GRANT ALL ON \`wpfleet\`.* TO 'wpfleet'@'127.0.0.1';
		GRANT ALL ON \`test\\_wpfleet%\`.* TO 'wpfleet'@'127.0.0.1';
	SQL
}

# The panel's account holds only what provisioning needs (docs/deploy.md):
# everything on the sites' wp_* databases, with the right to grant it to
# each site's account; creating accounts; its ownership records; and the
# names (not the password hashes) of existing accounts.
ensure_panel_account() {
	local pw user=$PANEL_DB_USER
	pw=$(env_get WPFLEET_DB_ADMIN_PASSWORD)
	[[ $pw =~ ^[A-Za-z0-9_.,:+=/-]+$ ]] || die "WPFLEET_DB_ADMIN_PASSWORD must be non-empty and free of quotes/spaces"
	[[ $(env_get WPFLEET_DB_ADMIN_USER) == "$user" ]] || die ".env WPFLEET_DB_ADMIN_USER must be $user in the lab"
	mariadb_root <<-SQL
		CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$pw';
		ALTER USER '$user'@'127.0.0.1' IDENTIFIED BY '$pw';
		GRANT ALL PRIVILEGES ON \`wp\\_%\`.* TO '$user'@'127.0.0.1' WITH GRANT OPTION;
		GRANT CREATE USER ON *.* TO '$user'@'127.0.0.1';
		GRANT ALL PRIVILEGES ON \`wpfleet\\_meta\`.* TO '$user'@'127.0.0.1';
		GRANT SELECT (User, Host) ON mysql.global_priv TO '$user'@'127.0.0.1';
	SQL
}

# MariaDB must listen only where intended; and a container on a user
# network must reach it at the gateway: Docker's isolation rules live in the
# FORWARD chain, while traffic to a host address goes through INPUT.
check_mariadb_reachability() {
	local gw=$1 listening
	listening=$(ss -Hltn 'sport = :3306' | awk '{print $4}' | sort | tr '\n' ' ')
	case " $listening" in
	*" 0.0.0.0:"* | *" *:"* | *" [::]:"*)
		die "MariaDB listens on all interfaces ($listening); expected 127.0.0.1 and $gw only"
		;;
	esac
	dk run --rm --network "$BACKEND_NETWORK" --entrypoint bash "$IMG_BASE" \
		-c "timeout 5 bash -c '</dev/tcp/$gw/3306'" >/dev/null 2>&1 ||
		die "a container on $BACKEND_NETWORK cannot reach MariaDB at $gw:3306 (host firewall INPUT rules?)"
}

# Caddy's certificates: its own CA (offline), or ACME (Let's Encrypt, then
# ZeroSSL) when WPFLEET_ACME_EMAIL is set and the names resolve to this host.
caddy_tls_option() {
	if [[ -n ${WPFLEET_ACME_EMAIL:-} ]]; then
		[[ $WPFLEET_ACME_EMAIL =~ ^[^[:space:]@]+@[^[:space:]@]+$ ]] ||
			die "WPFLEET_ACME_EMAIL=$WPFLEET_ACME_EMAIL is not an email address"
		echo "email $WPFLEET_ACME_EMAIL"
	else
		echo local_certs
	fi
}

ensure_caddy() {
	local caddyfile="$LAB_DIR/caddy/Caddyfile"
	ensure_container "$CADDY_CONTAINER" "$IMG_CADDY" \
		"$(sha256sum <"$caddyfile") $(dk network inspect -f '{{.Id}}' "$BACKEND_NETWORK") $CADDY_HTTP_PUBLISH $CADDY_HTTPS_PUBLISH $(caddy_tls_option)" \
		--network "$BACKEND_NETWORK" --restart unless-stopped \
		-p "$CADDY_HTTP_PUBLISH:80" -p "$CADDY_HTTPS_PUBLISH:443" \
		-e "WPFLEET_CADDY_TLS=$(caddy_tls_option)" \
		-v "$caddyfile:/etc/caddy/Caddyfile:ro" \
		-v wpfleet_caddy_routes:/etc/caddy/routes \
		-v wpfleet_caddy_data:/data
	# Caddy reaches sites on every backend shard the panels made (label
	# wpfleet.role=backend-shard, sites.provisioning.shards): a re-created
	# Caddy joins them all again (the panel's reconciler would too, within a minute).
	local shard
	for shard in $(dk network ls -q --filter label=wpfleet.role=backend-shard); do
		if ! dk network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$shard" | grep -qw "$CADDY_CONTAINER"; then
			log "attaching $CADDY_CONTAINER to backend shard $(dk network inspect -f '{{.Name}}' "$shard")"
			dk network connect "$shard" "$CADDY_CONTAINER"
		fi
	done
	# ready = the catch-all answers 404 for a host without a route
	local i code
	for ((i = 0; i < CADDY_TIMEOUT * 2; i++)); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: lab-probe.invalid' "http://$CADDY_HTTP_PUBLISH/" || true)
		[[ $code == 404 ]] && break
		sleep 0.5
	done
	if [[ $code != 404 ]]; then
		dk logs --tail 20 "$CADDY_CONTAINER" >&2 || true
		die "Caddy did not answer on http://$CADDY_HTTP_PUBLISH within ${CADDY_TIMEOUT}s (last status: $code)"
	fi
	# Caddy creates its CA when it starts; clients of the lab trust its root.
	[[ $(caddy_tls_option) == local_certs ]] || return 0
	for ((i = 0; i < CADDY_TIMEOUT * 2; i++)); do
		if dk cp "$CADDY_CONTAINER:/data/caddy/pki/authorities/local/root.crt" "$LAB_CA.tmp" 2>/dev/null; then
			mv "$LAB_CA.tmp" "$LAB_CA"
			return 0
		fi
		sleep 0.5
	done
	die "Caddy's local CA root did not appear in $CADDY_CONTAINER:/data/caddy/pki/authorities/local/root.crt"
}

# --- 8. backups -------------------------------------------------------------------

# The ssh command restic's sftp backend runs (-o sftp.command=...): restic
# then ignores the host and port of the repository string, so they are here.
sftp_ssh_command() {
	printf 'ssh -i %s -p %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes %s@%s -s sftp\n' \
		"$BACKUP_SFTP_KEY" "$SFTP_PORT" "$BACKUP_KNOWN_HOSTS" "$SFTP_USER" "$SFTP_HOST"
}

# sftp as the backup account, batch commands from stdin (exit non-zero on
# the first failing one).
sftp_batch() {
	sftp -q -b - -i "$BACKUP_SFTP_KEY" -P "$SFTP_PORT" -o "UserKnownHostsFile=$BACKUP_KNOWN_HOSTS" \
		-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 \
		"$SFTP_USER@$SFTP_HOST"
}

# restic_lab REPOSITORY ARGS...: restic on one of the lab's repositories.
# The password comes from its file (never an argument or the environment);
# no cache: these are one-off checks.
restic_lab() {
	local repo=$1 opts=(--no-cache)
	shift
	if [[ $repo == sftp:* ]]; then opts+=(-o "sftp.command=$(sftp_ssh_command)"); fi
	RESTIC_REPOSITORY=$repo RESTIC_PASSWORD_FILE=$BACKUP_PASSWORD_FILE restic "${opts[@]}" "$@"
}

# restic init REPOSITORY (its output names no secret; shown on failure).
restic_init() {
	local repo=$1 out
	log "initialising the restic repository $repo"
	out=$(restic_lab "$repo" init 2>&1) || {
		printf '%s\n' "$out" >&2
		die "restic init $repo failed"
	}
}

# A backup password generated by this run cannot open a repository that
# already existed: say so instead of leaving the panel to fail every backup.
check_repository_password() {
	local repo=$1 out
	[[ -n $BACKUP_PASSWORD_NEW ]] || return 0
	out=$(restic_lab "$repo" cat config 2>&1 >/dev/null) && return 0
	printf '%s\n' "$out" >&2
	die "restic repository $repo does not open with the new $BACKUP_PASSWORD_FILE (restore the old file, or move the repository away)"
}

ensure_local_repository() {
	if [[ -f $BACKUP_REPOSITORY/config ]]; then
		check_repository_password "$BACKUP_REPOSITORY"
		return 0
	fi
	(umask 077 && mkdir -p "$(dirname "$BACKUP_REPOSITORY")")
	restic_init "$BACKUP_REPOSITORY"
}

# Wait until the backup account can log in (which also proves the server
# presents the host key of known_hosts); then set SFTP_REPOSITORY_EXISTS to
# whether the repository's config file is there: the usual case costs one
# login and no restic run.
SFTP_REPOSITORY_EXISTS=''
wait_for_sftp() {
	local i out=''
	for ((i = 0; i < SFTP_TIMEOUT * 2; i++)); do
		if out=$(sftp_batch <<<"ls $(sftp_repository_path)/config" 2>&1); then
			SFTP_REPOSITORY_EXISTS=yes
			return 0
		fi
		case $out in
		*"not found"*)
			SFTP_REPOSITORY_EXISTS=no
			return 0
			;;
		*"Host key verification failed"* | *"Permission denied (publickey"*)
			printf '%s\n' "$out" >&2
			die "$SFTP_HOST:$SFTP_PORT refused the lab's backup key or presented another host key (is $SFTP_CONTAINER the one listening there?)"
			;;
		esac
		sleep 0.5
	done
	printf '%s\n' "$out" >&2
	dk logs --tail 20 "$SFTP_CONTAINER" >&2 || true
	die "no SFTP login as $SFTP_USER on $SFTP_HOST:$SFTP_PORT within ${SFTP_TIMEOUT}s"
}

# The SFTP repository, in the form restic is given with sftp.command.
# Initialised only when restic says there is none: any other error (wrong
# password, permissions) is reported, never answered with a fresh init.
ensure_sftp_repository() {
	local repo out
	repo="sftp:$SFTP_USER@$SFTP_HOST:$(sftp_repository_path)"
	if [[ $SFTP_REPOSITORY_EXISTS == yes ]]; then
		check_repository_password "$repo"
		return 0
	fi
	out=$(restic_lab "$repo" cat config 2>&1 >/dev/null) && return 0
	case $out in
	*"does not exist"* | *"unable to open config file"*) restic_init "$repo" ;;
	*)
		printf '%s\n' "$out" >&2
		die "cannot open the SFTP repository $repo (not initialising it)"
		;;
	esac
}

# The SFTP host stand-in: sshd with one SFTP-only account, the repositories
# on volume wpfleet_sftp_data. Only the host key and the client's public key
# are mounted (file by file: the secrets directory also holds MariaDB's root
# password); their hashes are in the spec, since a bind mount keeps pointing
# at a replaced file's old inode.
ensure_backups() {
	ensure_container "$SFTP_CONTAINER" "$IMG_SFTP" \
		"$(cat "$SFTP_HOST_KEY" "$BACKUP_SFTP_KEY.pub" | sha256sum)" \
		--restart unless-stopped \
		-p "$SFTP_PUBLISH:22" \
		-v wpfleet_sftp_data:/srv/backups \
		-v "$SFTP_HOST_KEY:/run/secrets/sftp/ssh_host_ed25519_key:ro" \
		-v "$BACKUP_SFTP_KEY.pub:/run/secrets/sftp/authorized_keys:ro"
	wait_for_sftp
	ensure_local_repository
	ensure_sftp_repository
}

# Pinned tags of older recipes go last, once the infrastructure containers
# were re-created on the new images (before, the old caddy and mariadb would
# keep theirs until the next run); the sites' containers keep theirs.
drop_unused_pins() {
	local pin
	for pin in "${CURRENT_PINS[@]}"; do
		drop_old_pins "${pin%-r*}" "$pin"
	done
}

summary() {
	local gw=$1
	cat <<-EOF
		lab: up. Engine: $(dk version -f '{{.Server.Version}}') (dockerd log: $DOCKERD_LOG)
		lab:   images     $IMG_WORDPRESS, $IMG_WORDPRESS_PHP84, $IMG_NGINX, $IMG_CADDY, $IMG_MARIADB, $IMG_SFTP
		lab:   network    $BACKEND_NETWORK
		lab:   mariadb    $MARIADB_CONTAINER on 127.0.0.1:3306 and $gw:3306 (sites), control DB wpfleet
		lab:   caddy      $CADDY_CONTAINER on https://$CADDY_HTTPS_PUBLISH and http://$CADDY_HTTP_PUBLISH (routes: /etc/caddy/routes/<hostname>; CA: $LAB_CA)
		lab:   backups    restic repository $BACKUP_REPOSITORY; SFTP host $SFTP_CONTAINER on $SFTP_HOST:$SFTP_PORT, repository $(sftp_repository_url) (secrets: $DB_SECRETS_DIR)
		lab:   config     $ENV_FILE
		lab: stop with lab/down.sh, inspect with lab/status.sh
	EOF
}

# step LABEL FUNCTION ARGS...: run one step, timed, remembered for errors.
step() {
	STEP=$2
	timed "$@"
}

main() {
	[[ $(id -u) == 0 ]] || die "run as root (apt-get, dockerd, debootstrap)"
	mkdir -p "$VAR_DIR/log" "$VAR_DIR/lab"
	# var/ holds the control database, logs and the lab's secrets: owner only
	chmod 700 "$VAR_DIR"
	# `make test` and a person may run this at the same time: one at a time
	exec 9>"$VAR_DIR/lab/up.lock.d"
	if ! flock -n 9; then
		log "another lab/up.sh is running; waiting for it"
		flock -w 900 9 || die "timed out waiting for the other lab/up.sh"
	fi
	local t0 gw
	t0=$(date +%s.%N)
	step "host packages ready" ensure_packages
	# before the engine: no site container may start on the bare mount point
	step "quota filesystem ready" ensure_quota_fs
	step "kernel limits ready" ensure_kernel_limits
	step "shim wrapper installed" install_shim
	step "cgroup layout ready" ensure_cgroup_layout
	step "engine ready" ensure_engine
	gw=$(bridge_gateway)
	[[ -n $gw ]] || die "cannot determine the docker0 gateway address"
	# before MariaDB's first start: .env holds its root password
	step ".env accounts ready" migrate_env_db_accounts
	# before .env names them
	step "backup secrets ready" ensure_backup_secrets
	step ".env ready" ensure_env "$gw"
	step "images ready" ensure_images
	step "network ready" ensure_network
	step "mariadb ready" ensure_mariadb "$gw"
	step "mariadb reachable from $BACKEND_NETWORK" check_mariadb_reachability "$gw"
	step "caddy ready" ensure_caddy
	step "backups ready" ensure_backups
	step "older images dropped" drop_unused_pins
	STEP=summary
	summary "$gw"
	log "$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "done (%.1fs)", e - s }')"
}

main "$@"
