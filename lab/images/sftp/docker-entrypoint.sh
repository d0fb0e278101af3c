#!/bin/sh
# Entrypoint of wpfleet-lab/sftp: put the mounted credentials where sshd
# wants them, make sure the repository directory belongs to `backup`, then
# exec the command (sshd -D -e: foreground, logs to stderr).
set -eu

secrets=/run/secrets/sftp
for f in ssh_host_ed25519_key authorized_keys; do
	if [ ! -s "$secrets/$f" ]; then
		echo "$0: $secrets/$f is missing or empty (lab/up.sh bind-mounts it)" >&2
		exit 1
	fi
done

# sshd reads authorized_keys with the user's rights and wants it owned by
# root or the user, writable by no one else: install a readable copy (it
# holds only a public key).
install -d -m 0755 /etc/ssh/authorized_keys
install -m 0644 "$secrets/authorized_keys" /etc/ssh/authorized_keys/backup

# A new volume is seeded from the image (owned by backup); one made some
# other way might not be.
chown backup:backup /srv/backups
chmod 0700 /srv/backups

# privilege separation directory (tmpfs-like /run may be empty)
install -d -m 0755 /run/sshd

exec "$@"
