#!/usr/bin/env bash
# POP3 side by side: Dovecot's pop3 (../shared/peers, PERF=1 process model) and mailprotod's mod_pop3, each
# on its own loopback port, over mailboxes seeded identically, driven by the same client
# (../shared/peers/bench-pop3.sh, Python poplib, USER/PASS with {PLAIN} passwords on both sides).
#
#   RETR throughput: bench-pop3.sh defaults (4 processes x SECS s, users u91-u100, every message RETRed)
#   session rate:    MAX_RETR=1 (login, STAT, one RETR, QUIT)
#
# usage: tests/bench/pop3_compare.sh          (as root on Debian 12; installs and starts Dovecot if needed)
# env:   BUILD=build-bench (a RelWithDebInfo build there, brought up to date first)  PEERS=/tmp/peers
#        MSGS=50 SIZE=4096 (per user, users 91-100)  SECS=20 PROCS=4  ROUNDS=3  PORT=11110  WORK=/tmp/pop3-bench
#
# Seeding: the same generated messages (LF line ends, as an MTA writes them) are written into both
# Maildir trees directly (tmp/ then rename into new/), so both servers start from identical maildrops that
# neither has indexed yet; a warm-up session per user lets each build its index before the timed runs.
# (SEED_SMTP would need an SMTP server delivering into both trees; direct files are the same for both.)
# Prints each RESULT line and, at the end, the medians and the mailprotod/Dovecot ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
peers_dir=${PEERS_DIR:-$(cd "$repo/../shared/peers" 2>/dev/null && pwd || true)}
[ -n "$peers_dir" ] && [ -f "$peers_dir/bench-pop3.sh" ] || { echo "no ../shared/peers (set PEERS_DIR)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (Dovecot peer setup)" >&2; exit 1; }

export PEERS=${PEERS:-/tmp/peers}
BUILD=${BUILD:-$repo/build-bench}
WORK=${WORK:-/tmp/pop3-bench}
PORT=${PORT:-11110}
DOVECOT_PORT=10110
MSGS=${MSGS:-50}
SIZE=${SIZE:-4096}
SECS=${SECS:-20}
PROCS=${PROCS:-4}
ROUNDS=${ROUNDS:-3}
USERS=91-100
lo=${USERS%-*} hi=${USERS#*-}

# ---- mailprotod (optimised build)
# Built every time (a no-op when up to date): a stale build would measure old code.
[ -f "$BUILD/CMakeCache.txt" ] ||
	cmake -S "$repo" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILPROTO_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target mailprotod mod_pop3 mod_maildir mod_passwd >/dev/null ||
	{ echo "build failed" >&2; exit 1; }

# ---- Dovecot (PERF=1)
if ! ss -ltn | grep -q "127.0.0.1:$DOVECOT_PORT "; then
	PERF=1 "$peers_dir/setup-dovecot.sh" >/dev/null
fi
grep -q "service_count = 0" "$PEERS/dovecot/dovecot.conf" || echo "WARNING: Dovecot is not running with PERF=1" >&2

# ---- identical maildrops
rm -rf "$WORK"
mkdir -p "$WORK/mail" "$WORK/state"
python3 - "$PEERS/mail" "$WORK/mail" "$lo" "$hi" "$MSGS" "$SIZE" <<'EOF'
import os, shutil, sys
peer_mail, our_mail, lo, hi, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
for u in range(lo, hi + 1):
    user = f"u{u}"
    dirs = (os.path.join(peer_mail, user, "Maildir"), os.path.join(our_mail, user))
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(d, sub))
    for i in range(n):
        head = (f"Return-Path: <seed@test>\nReceived: from bench by localhost\nFrom: <seed@test>\n"
                f"To: <{user}@localhost>\nSubject: bench message {i}\nMessage-ID: <{u}.{i}@bench>\n\n")
        body, k = [], 0
        while len(head) + sum(len(l) for l in body) < size:
            body.append(("." if k % 20 == 0 else "") + f"La la la {k:05d} " + "x" * 50 + "\n")
            k += 1
        data = (head + "".join(body)).encode()
        name = f"1700000000.M{u:03d}{i:05d}P1.bench"
        for d in dirs:
            with open(os.path.join(d, "tmp", name), "wb") as f:
                f.write(data)
            os.rename(os.path.join(d, "tmp", name), os.path.join(d, "new", name))
EOF
chown -R 5000:5000 "$PEERS/mail" 2>/dev/null || true

: > "$WORK/users"
for i in $(seq 1 100); do echo "u$i:{PLAIN}pass" >> "$WORK/users"; done
cat > "$WORK/mailprotod.conf" <<EOF
ServerName   bench.localhost
ModuleDir    $BUILD/modules
LoadModule   pop3    mod_pop3.so
LoadModule   maildir mod_maildir.so
LoadModule   passwd  mod_passwd.so
StateDir     state
LogLevel     notice
MailStore    maildir:mail/%u
UserDB       passwd-file:users
MaxConnections 2000
MaxConnectionsPerClient 2000
<Listen 127.0.0.1:$PORT>
    Protocol pop3
    TLS      off
</Listen>
EOF
"$BUILD/mailprotod" -c "$WORK/mailprotod.conf" -t >/dev/null
"$BUILD/mailprotod" -c "$WORK/mailprotod.conf" </dev/null >"$WORK/mailprotod.log" 2>&1 &
mp_pid=$!
trap 'kill $mp_pid 2>/dev/null; wait $mp_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do ss -ltn | grep -q "127.0.0.1:$PORT " && break; sleep 0.1; done

# warm-up: one session per user on each server (index creation, page cache)
python3 - "$DOVECOT_PORT" "$PORT" "$lo" "$hi" <<'EOF'
import poplib, sys
for port in map(int, sys.argv[1:3]):
    for u in range(int(sys.argv[3]), int(sys.argv[4]) + 1):
        p = poplib.POP3("127.0.0.1", port, timeout=30)
        p.user(f"u{u}"); p.pass_("pass")
        n, _ = p.stat()
        for i in range(1, n + 1):
            p.retr(i)
        p.quit()
EOF

results=$WORK/results.txt
: > "$results"
. "$here/cpu.sh"
run() { # name port max_retr
	local line n
	cpu_mark
	line=$(USERS=$USERS PROCS=$PROCS SECS=$SECS MAX_RETR=$3 "$peers_dir/bench-pop3.sh" 127.0.0.1 "$2" | grep '^RESULT')
	n=$(echo "$line" | sed -n 's/.* retr=\([0-9]*\).*/\1/p')
	# CPU per RETR (with its share of the logins): the server's (all but the client) and the client's
	line="$line server_us=$(cpu_server_us "${n:-0}") client_us=$(cpu_client_us "${n:-0}")"
	echo "$1 max_retr=$3 $line" | tee -a "$results"
}
for r in $(seq 1 "$ROUNDS"); do
	run dovecot "$DOVECOT_PORT" 0
	run mailproto "$PORT" 0
	run dovecot "$DOVECOT_PORT" 1
	run mailproto "$PORT" 1
done

python3 - "$results" <<'EOF'
import re, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(name, mr, key):
    vals = []
    for r in rows:
        if r[0] == name and r[1] == f"max_retr={mr}":
            m = re.search(key + r"=\d+ \(([\d.]+)", " ".join(r))
            vals.append(float(m.group(1)))
    return statistics.median(vals)
d_mb, m_mb = med("dovecot", 0, "bytes"), med("mailproto", 0, "bytes")
d_rs, m_rs = med("dovecot", 0, "retr"), med("mailproto", 0, "retr")
d_s, m_s = med("dovecot", 1, "sessions"), med("mailproto", 1, "sessions")
def med_us(name, key):
    vals = [float(m.group(1)) for r in rows if r[0] == name and r[1] == "max_retr=0"
            for m in [re.search(key + r"=([\d.]+)", " ".join(r))] if m]
    return statistics.median(vals) if vals else float("nan")
print(f"RETR throughput: Dovecot {d_mb:.2f} MB/s ({d_rs:.0f} RETR/s), mailprotod {m_mb:.2f} MB/s ({m_rs:.0f} RETR/s): "
      f"ratio {m_mb / d_mb:.2f}")
print(f"CPU per RETR (RETR runs, median): server Dovecot {med_us('dovecot', 'server_us'):.0f} us, "
      f"mailprotod {med_us('mailproto', 'server_us'):.0f} us; client {med_us('dovecot', 'client_us'):.0f} us "
      f"with Dovecot, {med_us('mailproto', 'client_us'):.0f} us with mailprotod")
print(f"sessions (MAX_RETR=1): Dovecot {d_s:.1f}/s, mailprotod {m_s:.1f}/s: ratio {m_s / d_s:.2f}")
EOF
