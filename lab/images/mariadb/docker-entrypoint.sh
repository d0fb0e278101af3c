#!/usr/bin/env bash
# Entrypoint of wpfleet-lab/mariadb:10.11, a small subset of the official
# mariadb image's entrypoint:
#  * on an empty datadir: initialise it, set root's password from
#    MARIADB_ROOT_PASSWORD (root@localhost and root@'%'), optionally create
#    MARIADB_DATABASE and MARIADB_USER (all privileges on that database and on
#    test_<database>*, where test suites create their databases);
#  * every variable may instead be given as <NAME>_FILE (Docker secrets);
#  * run mariadbd in the foreground, listening on MARIADB_BIND_ADDRESS
#    (comma-separated list; default 127.0.0.1, so nothing is exposed unless
#    asked for).
set -Eeuo pipefail

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

log() { printf '%s [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# file_env VAR: take VAR from VAR or from the file named by VAR_FILE.
file_env() {
	local var=$1 file_var="${1}_FILE" val=''
	if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
		die "both $var and $file_var are set (but are exclusive)"
	fi
	if [[ -n ${!var:-} ]]; then
		val=${!var}
	elif [[ -n ${!file_var:-} ]]; then
		val=$(<"${!file_var}")
	fi
	export "$var"="$val"
	unset "$file_var"
}

sql_string() { # escape for use inside '...'
	local s=${1//\\/\\\\}
	printf '%s' "${s//\'/\\\'}"
}
sql_ident() { # escape for use inside `...`
	printf '%s' "${1//\`/\`\`}"
}
grant_pattern() { # database name as a GRANT pattern: _ and % are wildcards there
	local s=${1//_/\\_}
	printf '%s' "${s//%/\\%}"
}

init_datadir() {
	[[ -n $MARIADB_ROOT_PASSWORD ]] ||
		die "the datadir is empty and MARIADB_ROOT_PASSWORD (or MARIADB_ROOT_PASSWORD_FILE) is not set"
	log "initialising the datadir $DATADIR"
	mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
		--auth-root-authentication-method=normal --skip-name-resolve >/dev/null

	# A temporary server without networking, so nothing can connect before
	# the root password is set.
	mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket="$SOCKET" &
	local pid=$! _
	for _ in $(seq 60); do
		mariadb --protocol=socket --socket="$SOCKET" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || die "temporary server failed to start"
		sleep 0.5
	done

	local rootpw db user pw
	rootpw=$(sql_string "$MARIADB_ROOT_PASSWORD")
	{
		cat <<-SQL
			SET @@SESSION.SQL_LOG_BIN=0;
			DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
			EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
			SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$rootpw');
			CREATE USER 'root'@'127.0.0.1' IDENTIFIED BY '$rootpw';
			GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
			GRANT PROXY ON ''@'%' TO 'root'@'127.0.0.1' WITH GRANT OPTION;
			DROP DATABASE IF EXISTS test;
		SQL
		if [[ -n $MARIADB_DATABASE ]]; then
			db=$(sql_ident "$MARIADB_DATABASE")
			echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
		fi
		if [[ -n $MARIADB_USER && -n $MARIADB_PASSWORD ]]; then
			user=$(sql_string "$MARIADB_USER")
			pw=$(sql_string "$MARIADB_PASSWORD")
			echo "CREATE USER '$user'@'127.0.0.1' IDENTIFIED BY '$pw';"
			if [[ -n $MARIADB_DATABASE ]]; then
				db=$(sql_ident "$(grant_pattern "$MARIADB_DATABASE")")
				echo "GRANT ALL ON \`$db\`.* TO '$user'@'127.0.0.1';"
				echo "GRANT ALL ON \`test\\_$db%\`.* TO '$user'@'127.0.0.1';"
			fi
		fi
		echo "FLUSH PRIVILEGES;"
	} | mariadb --protocol=socket --socket="$SOCKET" -uroot

	kill "$pid"
	wait "$pid" || true
	log "datadir initialised"
}

if [[ ${1:0:1} == '-' ]]; then
	set -- mariadbd "$@"
fi

if [[ $1 == mariadbd || $1 == mysqld ]]; then
	for v in MARIADB_ROOT_PASSWORD MARIADB_DATABASE MARIADB_USER MARIADB_PASSWORD; do
		file_env "$v"
	done
	install -d -o mysql -g mysql /run/mysqld
	# a fresh volume may be root-owned
	if [[ $(stat -c %U "$DATADIR") != mysql ]]; then chown mysql:mysql "$DATADIR"; fi
	if [[ ! -d $DATADIR/mysql ]]; then
		init_datadir
	elif [[ -n $MARIADB_ROOT_PASSWORD ]]; then
		# Unlike the official image, a lab datadir outlives the checkout that
		# created it (a fresh clone writes a new .env): the password in the
		# environment wins at every start.
		install -m 0600 -o mysql -g mysql /dev/null /run/mysqld/init.sql
		rootpw=$(sql_string "$MARIADB_ROOT_PASSWORD")
		# root logs in from this host only (the lab's scripts and tests), never
		# from a tenant's container: a datadir from an older lab had root@'%'.
		cat >/run/mysqld/init.sql <<-SQL
			ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED BY '$rootpw';
			CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '$rootpw';
			ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$rootpw';
			GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
			DROP USER IF EXISTS 'root'@'%';
		SQL
		set -- "$@" --init-file=/run/mysqld/init.sql
	fi
	# secrets are not needed by the server itself
	unset MARIADB_ROOT_PASSWORD MARIADB_PASSWORD
	# The server reads the init file once, at start: do not leave root's
	# password on disk (started after the unset, so no copy in its environment).
	if [[ -f /run/mysqld/init.sql ]]; then (sleep 60 && rm -f /run/mysqld/init.sql) & fi
	set -- "$@" --user=mysql --bind-address="${MARIADB_BIND_ADDRESS:-127.0.0.1}"
fi

exec "$@"
