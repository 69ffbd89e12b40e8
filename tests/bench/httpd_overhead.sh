#!/bin/bash
# The cost of running the SMTP handler inside Apache httpd (mod_mailproto) instead of mailprotod (issue 6):
# the same handler files, store and load (Postfix's smtp-source through ../shared/peers/bench-smtp.sh:
# 20 sessions x 4 KiB, COUNT messages, delivered durably into a Maildir), alternating A B A B in one sitting.
#
# usage: tests/bench/httpd_overhead.sh [--build DIR]     (as root; loopback only; a few minutes)
# env:   SESSIONS=20 SIZE=4096 COUNT=5000 DURATION=60 ROUNDS=2 WORKERS=20
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$repo/build
[ "${1:-}" = --build ] && build=$(cd "$2" && pwd)
PEERS_DIR=${PEERS_DIR:-$repo/../shared/peers}
[ -d "$PEERS_DIR" ] || PEERS_DIR=/work/shared/peers
export SESSIONS=${SESSIONS:-20} SIZE=${SIZE:-4096} COUNT=${COUNT:-5000} DURATION=${DURATION:-60}
ROUNDS=${ROUNDS:-2}
WORKERS=${WORKERS:-20}
MP_PORT=10625 HT_PORT=10626

die() { echo "ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
for f in mailprotod modules/mod_smtp.so modules/mod_maildir.so modules/mod_passwd.so modules/mod_mailproto.so; do
	[ -e "$build/$f" ] || die "no $build/$f"
done
command -v apache2 >/dev/null || die "apache2 missing"
command -v smtp-source >/dev/null || PATH=$PATH:/usr/sbin

work=$(mktemp -d /var/tmp/mailproto-httpd-bench-XXXXXX)
chmod 755 "$work"
mp_pid=
cleanup() {
	[ -n "$mp_pid" ] && kill "$mp_pid" 2>/dev/null && wait "$mp_pid" 2>/dev/null
	[ -f "$work/ht/httpd.pid" ] && apache2 -f "$work/ht/httpd.conf" -k stop 2>/dev/null
	sleep 1
	rm -rf "$work"
}
trap cleanup EXIT
rate_of() { sed -n 's/.*rate=\([0-9.]*\).*/\1/p' | tail -1; }
wait_port() { for _ in $(seq 1 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }

users() { for i in $(seq 1 100); do echo "u$i@localhost:{PLAIN}pass"; done; }
mkdir -p "$work/mp/state" "$work/ht/logs" "$work/ht/mail"
users >"$work/mp/users"
users >"$work/ht/users"
chown -R www-data:www-data "$work/ht/mail"

cat >"$work/mp/mailprotod.conf" <<CONF
ServerName  bench.localhost
ModuleDir   $build/modules
LoadModule  smtp    mod_smtp.so
LoadModule  maildir mod_maildir.so
LoadModule  passwd  mod_passwd.so
StateDir    state
LogLevel    warn
Workers     $WORKERS
MaxConnectionsPerClient 1000
LocalDomains localhost
MailStore   maildir:mail/%d/%n
UserDB      passwd-file:users
<Listen 127.0.0.1:$MP_PORT>
    Protocol smtp
</Listen>
CONF

cat >"$work/ht/httpd.conf" <<CONF
ServerRoot $work/ht
PidFile $work/ht/httpd.pid
ErrorLog $work/ht/logs/error.log
LogLevel warn
ServerName localhost
User www-data
Group www-data
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mailproto_module $build/modules/mod_mailproto.so
# One child with enough threads for the sessions, like mailprotod's one process.
StartServers 1
ServerLimit 1
ThreadsPerChild 64
MaxRequestWorkers 64
Listen 127.0.0.1:$HT_PORT smtp
MailprotoServerName bench.localhost
MailprotoLoad smtp    $build/modules/mod_smtp.so
MailprotoLoad maildir $build/modules/mod_maildir.so
MailprotoLoad passwd  $build/modules/mod_passwd.so
MailprotoLogLevel warn
MailprotoWorkers $WORKERS
MailprotoLocalDomains localhost
MailprotoStore maildir:mail/%d/%n
MailprotoUserDB passwd-file:users
<VirtualHost 127.0.0.1:$HT_PORT>
    MailprotoProtocol smtp
    MailprotoMaxConnectionsPerClient 1000
</VirtualHost>
CONF

"$build/mailprotod" -c "$work/mp/mailprotod.conf" 2>"$work/mp/stderr" &
mp_pid=$!
wait_port $MP_PORT || { cat "$work/mp/stderr"; die "mailprotod did not start"; }
apache2 -f "$work/ht/httpd.conf" -k start || die "httpd did not start"
wait_port $HT_PORT || { cat "$work/ht/logs/error.log"; die "httpd did not listen"; }

run() { # PORT MAILDIR
	swaks --server 127.0.0.1 --port "$1" --from a@test --to u1@localhost --silent 2 >/dev/null 2>&1 || true
	RCPT=u1@localhost DELIVERY_DIR="$2" bash "$PEERS_DIR/bench-smtp.sh" "127.0.0.1:$1" | grep 'RESULT smtp-delivery' | rate_of
}
mp_rates=() ht_rates=()
for r in $(seq 1 "$ROUNDS"); do
	mp_rates+=("$(run $MP_PORT "$work/mp/mail/localhost/u1/new")")
	ht_rates+=("$(run $HT_PORT "$work/ht/mail/localhost/u1/new")")
	echo "round $r: mailprotod ${mp_rates[-1]:-?} msg/s, httpd ${ht_rates[-1]:-?} msg/s"
done
sum() { local t=0; for x in "$@"; do t=$(awk "BEGIN { print $t + ${x:-0} }"); done; echo "$t"; }
mp=$(sum "${mp_rates[@]}") ht=$(sum "${ht_rates[@]}")
echo "SUMMARY sessions=$SESSIONS size=$SIZE count=$COUNT rounds=$ROUNDS"
awk "BEGIN { if ($mp > 0) printf \"  httpd / mailprotod = %.2f (delivered messages per second, same handlers and store)\n\", $ht / $mp }"
