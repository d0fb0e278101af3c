#!/bin/sh
# Like the official nginx image's 30-tune-worker-processes.sh: when
# NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE is set, size worker_processes to
# the CPUs this container may really use (CPU quota rounded up, capped by the
# cpuset and the machine), instead of "auto" = every CPU of the host.
set -eu

ME=$(basename "$0")
conf=/etc/nginx/nginx.conf
# overridable only to test this script against a fake cgroup tree
cg=${NGINX_ENTRYPOINT_CGROUP_ROOT:-/sys/fs/cgroup}

[ -n "${NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE:-}" ] || exit 0

# Prints the CPU quota rounded up, or nothing when there is no quota.
quota_cpus() {
	if [ -r "$cg/cpu.max" ]; then
		# cgroup v2: "QUOTA PERIOD", QUOTA may be "max"
		read -r quota period <"$cg/cpu.max"
	elif [ -r "$cg/cpu/cpu.cfs_quota_us" ]; then
		# cgroup v1: quota -1 means unlimited
		quota=$(cat "$cg/cpu/cpu.cfs_quota_us")
		period=$(cat "$cg/cpu/cpu.cfs_period_us")
	else
		return 0
	fi
	case "$quota" in max | -1 | "") return 0 ;; esac
	[ "${period:-0}" -gt 0 ] || return 0
	echo $(((quota + period - 1) / period))
}

# CPUs in a cpuset list such as "0-3,6".
count_cpuset() {
	echo "$1" | tr ',' '\n' | awk -F- 'NF { n += ($2 == "" ? 1 : $2 - $1 + 1) } END { print n + 0 }'
}

cpuset_cpus() {
	for f in "$cg/cpuset.cpus.effective" "$cg/cpuset/cpuset.effective_cpus" \
		"$cg/cpuset/cpuset.cpus"; do
		if [ -r "$f" ] && [ -n "$(cat "$f")" ]; then
			count_cpuset "$(cat "$f")"
			return 0
		fi
	done
}

ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
for n in $(quota_cpus) $(cpuset_cpus); do
	if [ "$n" -gt 0 ] && [ "$n" -lt "$ncpu" ]; then ncpu=$n; fi
done

if [ ! -w "$conf" ]; then
	echo "$ME: info: $conf is not writable, leaving worker_processes as is"
	exit 0
fi
sed -i -E "s/^(\s*worker_processes\s+)[^;]*;/\1$ncpu;/" "$conf"
if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
	echo "$ME: info: worker_processes set to $ncpu"
fi
