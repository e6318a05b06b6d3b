# Sourced by the masking benchmarks: a scratch directory and a throwaway PostgreSQL cluster
# (SCRAM, no fsync) on a free port, holding 100,000 customer rows — id, name, e-mail,
# phone, SSN, card, notes, timestamp — and a pgbench script selecting ROWS of them from a
# random id. Sets work, pgbin, pg_port, pids (killed on exit with the cluster) and
# PGHOST; defines as_pg and free_port. Installs PostgreSQL (and any packages named in
# EXTRA_PACKAGES) with apt-get when missing.

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
for package in ${EXTRA_PACKAGES:-}; do
    command -v "$package" >/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

work=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-bench.XXXXXX")
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)

echo -n superpw > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres: "$work/pw"
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --pwfile "$work/pw" --auth-host=scram-sha-256 \
    --auth-local=trust -E UTF8 --locale=C --no-sync >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
fsync = off
synchronous_commit = off
CONF
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
export PGHOST=127.0.0.1
PGPASSWORD=superpw "$pgbin/psql" -q -p "$pg_port" -U postgres -c "CREATE ROLE app LOGIN PASSWORD 'apppw'" -c "CREATE DATABASE bench OWNER app"
PGPASSWORD=apppw "$pgbin/psql" -q -p "$pg_port" -U app bench <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, ssn text, card text, notes text, created timestamptz);
INSERT INTO customers
SELECT i, 'customer ' || i, 'user' || i || '@example.com', '(415) 555-' || lpad((i % 10000)::text, 4, '0'),
       lpad((100000000 + i)::text, 9, '0'), '4111111111111111', 'order ORD-' || i || ' shipped', now()
FROM generate_series(1, 100000) i;
SQL
# ROWS rows per transaction, starting at a random id.
cat > "$work/rows.sql" <<SQL
\\set start random(1, $((100001 - ROWS)))
SELECT id, name, email, phone, ssn, card, notes, created FROM customers WHERE id BETWEEN :start AND :start + $((ROWS - 1));
SQL
echo -n apppw > "$work/target-pw"
