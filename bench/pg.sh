#!/usr/bin/env bash
# PostgreSQL side by side, in one run on one machine: pgbench select-only through
#   direct            the target itself
#   gatehouse-sync    the gateway, every statement parsed, decided and durably recorded first
#   gatehouse-batched the same with batched durability (5 ms window)
#   pgbouncer         PgBouncer in session mode (the peer)
# then single-connection simple-query latency (p50/p99) for each, then the memory each
# idle client connection costs the gateway and PgBouncer (RSS with IDLE connections open,
# minus RSS with one).
#
#   bench/pg.sh                 defaults: 16 clients, 20 s per TPS run, 10 s per latency run
#   DURATION=60 CLIENTS=32 IDLE=2000 bench/pg.sh
#   ONLY="gatehouse-batched pgbouncer" bench/pg.sh   a subset of the targets
#
# Installs pgbouncer and PostgreSQL with apt-get when missing. Results go to stdout; the
# numbers in docs/BENCHMARKS.md come from this script.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-20}
LATENCY_DURATION=${LATENCY_DURATION:-10}
SCALE=${SCALE:-10}
IDLE=${IDLE:-1000}

need=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
python3 -c "import psycopg" 2>/dev/null || python3 -m pip install --quiet "psycopg[binary]>=3.1" >&2
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgbouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

cargo build --release -p gatehouse >&2
gatehouse=$PWD/target/release/gatehouse

work=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-pgbench.XXXXXX")
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # runuser forks, so killing it leaves pgbouncer running: end it by its config path.
    pkill -f "$work/pgbouncer.ini" 2>/dev/null || true
    as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); gw_sync=$(free_port); gw_batched=$(free_port); bouncer_port=$(free_port); admin=$(free_port)

# The target: a throwaway cluster with SCRAM, tuned like a test box (no fsync).
echo -n superpw > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres: "$work/pw"
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --pwfile "$work/pw" --auth-host=scram-sha-256 \
    --auth-local=trust -E UTF8 --locale=C --no-sync >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
max_connections = $((IDLE + 100))
shared_buffers = '256MB'
fsync = off
synchronous_commit = off
CONF
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
export PGHOST=127.0.0.1
PGPASSWORD=superpw "$pgbin/psql" -q -p "$pg_port" -U postgres -c "CREATE ROLE app LOGIN PASSWORD 'apppw'" -c "CREATE DATABASE bench OWNER app"
PGPASSWORD=apppw "$pgbin/pgbench" -q -i -s "$SCALE" -p "$pg_port" -U app bench >/dev/null 2>&1

# The gateway: one resource per durability mode, one API key.
key=$("$gatehouse" keys generate --name bench | awk 'NR == 1 {print $NF}')
hash=$(printf %s "$key" | "$gatehouse" keys hash)
echo -n apppw > "$work/target-pw"
cat > "$work/gatehouse.toml" <<TOML
data_dir = "$work/gatehouse-data"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$admin"
[[resources]]
name = "bench-sync"
kind = "postgres"
durability = "sync"
listen = "127.0.0.1:$gw_sync"
target = "127.0.0.1:$pg_port"
database = "bench"
[resources.credentials]
user = "app"
password_file = "$work/target-pw"
[[resources]]
name = "bench-batched"
kind = "postgres"
durability = "batched"
listen = "127.0.0.1:$gw_batched"
target = "127.0.0.1:$pg_port"
database = "bench"
[resources.credentials]
user = "app"
password_file = "$work/target-pw"
[[identities]]
name = "bench"
kind = "service"
key_hash = "$hash"
TOML
"$gatehouse" serve --config "$work/gatehouse.toml" 2>"$work/gatehouse.log" &
gateway_pid=$!
pids+=($gateway_pid)

# The peer: PgBouncer in session mode, SCRAM on both sides.
cat > "$work/userlist.txt" <<USERS
"app" "apppw"
USERS
cat > "$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = $((IDLE + 100))
default_pool_size = $((IDLE + 50))
unix_socket_dir =
logfile = $work/pgbouncer.log
INI
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"
# runuser applies the system's default open-file limit (often 1024); the idle phase needs
# two descriptors per client.
as_pg bash -c 'ulimit -n $(( $1 * 2 + 200 )) && exec "$2" "$3"' _ "$IDLE" "$pgbouncer" "$work/pgbouncer.ini" >/dev/null 2>&1 &
pids+=($!)

for port in "$gw_sync" "$gw_batched" "$bouncer_port"; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

# name port user password
targets=(
    "direct $pg_port app apppw"
    "gatehouse-sync $gw_sync bench $key"
    "gatehouse-batched $gw_batched bench $key"
    "pgbouncer $bouncer_port app apppw"
)
if [ -n "${ONLY:-}" ]; then
    chosen=()
    for t in "${targets[@]}"; do
        [[ " $ONLY " == *" ${t%% *} "* ]] && chosen+=("$t")
    done
    ((${#chosen[@]})) || { echo "bench/pg.sh: ONLY=\"$ONLY\" names none of: direct gatehouse-sync gatehouse-batched pgbouncer" >&2; exit 2; }
    targets=("${chosen[@]}")
fi

echo "# $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ); pgbench -S -M prepared -c $CLIENTS -j 2 -T $DURATION, scale $SCALE"
for t in "${targets[@]}"; do
    read -r name port user pw <<<"$t"
    tps=$(PGPASSWORD=$pw "$pgbin/pgbench" -n -S -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -p "$port" -U "$user" bench 2>&1 \
        | awk '/^tps/ {print $3; exit}')
    printf '%-18s tps %s\n' "$name" "$tps"
done

echo "# single connection, simple protocol, SELECT 1 latency over $LATENCY_DURATION s (per-transaction log)"
echo "SELECT 1;" > "$work/one.sql"
for t in "${targets[@]}"; do
    read -r name port user pw <<<"$t"
    rm -f "$work"/lat.*
    (cd "$work" && PGPASSWORD=$pw "$pgbin/pgbench" -n -M simple -c 1 -T "$LATENCY_DURATION" -f one.sql -l --log-prefix=lat \
        -p "$port" -U "$user" bench >/dev/null 2>&1)
    cat "$work"/lat.* | awk '{print $3}' | sort -n > "$work/sorted"
    n=$(wc -l < "$work/sorted")
    p50=$(sed -n "$(( (n + 1) / 2 ))p" "$work/sorted")
    p99=$(sed -n "$(( (n * 99 + 99) / 100 ))p" "$work/sorted")
    printf '%-18s n %s p50_us %s p99_us %s\n' "$name" "$n" "$p50" "$p99"
done

echo "# memory per idle client connection: RSS with $IDLE idle connections (each authenticated, one SELECT run) minus RSS with one"
bouncer_pid=$(pgrep -n -x pgbouncer)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# name port user password pid
for t in "gatehouse-sync $gw_sync bench $key $gateway_pid" "pgbouncer $bouncer_port app apppw $bouncer_pid"; do
    read -r name port user pw pid <<<"$t"
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && continue
    conninfo="host=127.0.0.1 port=$port user=$user password=$pw dbname=bench"
    one=$( (sleep 2; echo) | python3 bench/idle_connections.py 1 "$conninfo" >/dev/null; rss_kib "$pid")
    coproc IDLERS { python3 bench/idle_connections.py "$IDLE" "$conninfo"; }
    read -r ready opened <&"${IDLERS[0]}" || true
    [ "$ready" = ready ] || { echo "bench/pg.sh: $name: the idle connections did not open" >&2; exit 1; }
    sleep 1
    many=$(rss_kib "$pid")
    eval "exec ${IDLERS[1]}>&-"
    wait "$IDLERS_PID" 2>/dev/null || true
    printf '%-18s idle %s rss_one_kib %s rss_idle_kib %s per_conn_kib %s\n' "$name" "$opened" "$one" "$many" \
        $(( (many - one) / opened ))
done
