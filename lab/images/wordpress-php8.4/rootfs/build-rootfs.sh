#!/usr/bin/env bash
# Build the root filesystem of wpfleet-lab/base:trixie as a tarball.
#
#   build-rootfs.sh OUT.tar CACHE_DIR
#
# The trixie counterpart of lab/images/base/build-rootfs.sh (same steps, its
# own suite and package list, packages.txt beside this file): debootstrap a
# minbase trixie (cached as CACHE_DIR/debootstrap-trixie-minbase.tar),
# install packages.txt with apt in a chroot, write OUT.tar for `docker
# import`. The .debs are kept in CACHE_DIR/apt-archives, shared with the
# bookworm base (file names carry the versions).
#
# PHP 8.4 comes from a trixie system of its own rather than from trixie
# packages added to the bookworm base: php8.4 needs trixie's libc6, OpenSSL
# (libssl3t64), ICU and libxml2, and pulling those into bookworm would
# replace half of the base's libraries under its other packages (a mixed
# system apt's pinning does not keep consistent).
set -euo pipefail

out=${1:?usage: build-rootfs.sh OUT.tar CACHE_DIR}
cache=${2:?usage: build-rootfs.sh OUT.tar CACHE_DIR}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite=trixie
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
minbase_tar="$cache/debootstrap-$suite-minbase.tar"

mkdir -p "$cache/apt-archives/partial"
root="$(mktemp -d /var/tmp/wpfleet-rootfs-$suite.XXXXXX)"

# Unmount everything below the rootfs before deleting it: rm -rf across a
# live bind mount would wipe the apt cache (or worse, /proc).
cleanup() {
	local m
	for m in var/cache/apt/archives proc; do
		if mountpoint -q "$root/$m"; then umount -l "$root/$m" || true; fi
	done
	rm -rf --one-file-system "$root"
}
trap cleanup EXIT

if [[ -s $minbase_tar ]]; then
	echo "build-rootfs: reusing $minbase_tar" >&2
	tar -C "$root" -xpf "$minbase_tar"
else
	echo "build-rootfs: debootstrap $suite (minbase) from $mirror" >&2
	# (bookworm's debootstrap and debian-archive-keyring know trixie)
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2
	tar -C "$root" -cpf "$minbase_tar.tmp" .
	mv "$minbase_tar.tmp" "$minbase_tar"
fi

# apt in the chroot: same suites as a stock trixie image, security fixes
# included; services must not be started by maintainer scripts.
rm -f "$root/etc/apt/sources.list.d/debian.sources"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
SOURCES
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
# (no `apt-get clean`: the .debs stay in the cache, outside the image)
mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"

packages=$(grep -Ev '^\s*(#|$)' "$here/packages.txt" | tr '\n' ' ')
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
	sh -ec "apt-get update -qq -o APT::Sandbox::User=root
		apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 -o APT::Sandbox::User=root $packages" >&2

umount "$root/var/cache/apt/archives"
umount "$root/proc"

# Trim what a container never needs (debootstrap's own .debs and apt's
# caches included); Docker provides resolv.conf/hostname.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/* \
	"$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/log/apt/* \
	"$root"/tmp/* "$root"/var/tmp/*
: >"$root/etc/resolv.conf"
rm -f "$root/etc/hostname"

tar --numeric-owner -C "$root" -cpf "$out.tmp" .
mv "$out.tmp" "$out"
