#!/usr/bin/env bash
# What masking costs end to end, in one run: pgbench with a custom script that selects
# ROWS customer rows (name, e-mail, phone, SSN, card, notes; 20 by default) per
# transaction, against
#   direct           the target itself
#   masking-off      the gateway (batched durability) with [resources.masking] enabled = false
#   detectors        the gateway with the default masking: every built-in detector
#   detectors+rules  the same plus column rules on ssn and card (catalog lookups, lineage)
#   off-control      a second gateway resource with masking off, identical to masking-off:
#                    how far apart two runs of the same thing land, the yardstick for the
#                    differences above
#
#   bench/masking.sh            defaults: 8 clients, 10 s per run, 5 rounds, 20 rows
#   DURATION=30 CLIENTS=16 ROUNDS=5 ROWS=5 bench/masking.sh
#   BASELINE=/path/to/an/older/gatehouse bench/masking.sh
#                               adds base-off and base-detectors: the same two resources
#                               served by another build, taking turns with this one's, so
#                               two builds are compared in one run (each against its own
#                               masking-off)
#
# The targets take turns, each round starting one target later, and each line of the
# summary is the median of its rounds: on a shared machine one run of a target can be a
# third off the next. Five rounds (the default) give each target every place in the order.
# "paired" is the median of the rounds' own ratios (a target's TPS over masking-off's in
# the same round), which the machine's drift from round to round moves less.
#
# Installs PostgreSQL with apt-get when missing. The numbers in docs/BENCHMARKS.md come
# from this script.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
ROWS=${ROWS:-20}
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then
    echo "BASELINE=$BASELINE is not an executable gatehouse binary" >&2
    exit 2
fi

cargo build --release -p gatehouse >&2
gatehouse=$PWD/target/release/gatehouse
# shellcheck source=bench/customers.sh
. bench/customers.sh
p_off=$(free_port); p_det=$(free_port); p_rules=$(free_port); p_control=$(free_port); admin=$(free_port)

key=$("$gatehouse" keys generate --name bench | awk 'NR == 1 {print $NF}')
hash=$(printf %s "$key" | "$gatehouse" keys hash)
resource() { # name port masking-toml
    cat <<TOML
[[resources]]
name = "$1"
kind = "postgres"
durability = "batched"
listen = "127.0.0.1:$2"
target = "127.0.0.1:$pg_port"
database = "bench"
[resources.credentials]
user = "app"
password_file = "$work/target-pw"
$3
TOML
}
{
    printf 'data_dir = "%s"\n[log]\nlevel = "warn"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$work/gatehouse-data" "$admin"
    resource masking-off "$p_off" $'[resources.masking]\nenabled = false'
    resource detectors "$p_det" ""
    resource off-control "$p_control" $'[resources.masking]\nenabled = false'
    resource detectors-rules "$p_rules" $'[[resources.masking.columns]]\ncolumn = "public.customers.ssn"\n[[resources.masking.columns]]\ncolumn = "customers.card"\nstrategy = "partial:4"'
    printf '[[identities]]\nname = "bench"\nkind = "service"\nkey_hash = "%s"\n' "$hash"
} > "$work/gatehouse.toml"
"$gatehouse" serve --config "$work/gatehouse.toml" 2>"$work/gatehouse.log" &
pids+=($!)
ports=("$p_off" "$p_det" "$p_rules" "$p_control")
if [ -n "$BASELINE" ]; then
    p_boff=$(free_port); p_bdet=$(free_port); badmin=$(free_port)
    {
        printf 'data_dir = "%s"\n[log]\nlevel = "warn"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$work/baseline-data" "$badmin"
        resource base-off "$p_boff" $'[resources.masking]\nenabled = false'
        resource base-detectors "$p_bdet" ""
        printf '[[identities]]\nname = "bench"\nkind = "service"\nkey_hash = "%s"\n' "$hash"
    } > "$work/baseline.toml"
    "$BASELINE" serve --config "$work/baseline.toml" 2>"$work/baseline.log" &
    pids+=($!)
    ports+=("$p_boff" "$p_bdet")
fi
for port in "${ports[@]}"; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

echo "# $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); pgbench -M prepared -c $CLIENTS -j 2 -T $DURATION, $ROWS rows x 8 columns per transaction, $ROUNDS rounds"
# A gateway's CPU time (user + system, in clock ticks) so far: this build's, or with
# `base-*` targets the baseline's.
gw_ticks() { awk '{print $14 + $15}' "/proc/${pids[$1]}/stat"; }
hz=$(getconf CLK_TCK)
targets=("direct $pg_port app apppw" "masking-off $p_off bench $key" "detectors $p_det bench $key" "detectors+rules $p_rules bench $key" "off-control $p_control bench $key")
[ -n "$BASELINE" ] && targets+=("base-off $p_boff bench $key" "base-detectors $p_bdet bench $key")
# What each target is compared with: its own build's masking-off.
reference() { case $1 in base-*) echo base-off ;; *) echo masking-off ;; esac; }
declare -A results
for round in $(seq "$ROUNDS"); do
    # Each round starts one target later: the gateway's ledger writes pile up in the page
    # cache and are flushed in bursts, so whichever target always ran after another would
    # pay for its writes.
    shift=$(((round - 1) % ${#targets[@]}))
    for t in "${targets[@]:shift}" "${targets[@]:0:shift}"; do
        read -r name port user pw <<<"$t"
        gw=0; case $name in base-*) gw=1 ;; esac
        before=$(gw_ticks $gw)
        out=$(cd "$work" && PGPASSWORD=$pw "$pgbin/pgbench" -n -M prepared -f rows.sql -c "$CLIENTS" -j 2 -T "$DURATION" -p "$port" -U "$user" bench 2>&1)
        ticks=$(($(gw_ticks $gw) - before))
        tps=$(awk '/^tps/ {printf "%.0f", $3; exit}' <<<"$out")
        txns=$(awk '/^number of transactions actually processed/ {print $NF; exit}' <<<"$out" | cut -d/ -f1)
        # Gateway CPU per transaction: what masking adds, apart from how the cores are shared.
        cpu=$(awk -v t="$ticks" -v hz="$hz" -v n="$txns" 'BEGIN {if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-"}')
        [ "$name" = direct ] && cpu="-"
        printf 'round %s  %-16s tps %-8s gateway cpu us/txn %s\n' "$round" "$name" "$tps" "$cpu"
        results[$name]+="$tps $cpu;"
    done
done
median() { tr ' ' '\n' | { grep -v '^-*$' || true; } | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "# medians of $ROUNDS rounds; each target against its own build's masking-off"
declare -A med_tps med_cpu
column() { tr ';' '\n' <<<"${results[$1]}" | awk -v f="$2" 'NF {print $f}'; }
for t in "${targets[@]}"; do
    read -r name _ <<<"$t"
    med_tps[$name]=$(column "$name" 1 | tr '\n' ' ' | median)
    med_cpu[$name]=$(column "$name" 2 | tr '\n' ' ' | median)
done
for t in "${targets[@]}"; do
    read -r name _ <<<"$t"
    ref=$(reference "$name")
    ratio="-"; paired="-"; extra="-"
    if [ "$name" != direct ]; then
        ratio=$(awk -v a="${med_tps[$name]}" -v b="${med_tps[$ref]}" 'BEGIN {printf "%.2f", a / b}')
        extra=$(awk -v a="${med_cpu[$name]}" -v b="${med_cpu[$ref]}" 'BEGIN {printf "%+.1f", a - b}')
        # Paired: each round's TPS over the reference's in the same round, then the median.
        # The machine drifts between rounds more than within one.
        paired=$(paste -d' ' <(column "$name" 1) <(column "$ref" 1) |
            awk '{printf "%s ", $1 / $2}' | median | awk '{printf "%.2f", $1}')
    fi
    printf '%-16s tps %-8s vs off %-5s paired %-5s gateway cpu us/txn %-6s (%s)\n' "$name" "${med_tps[$name]}" "$ratio" "$paired" "${med_cpu[$name]}" "$extra"
done
echo "# one masked row as each client sees it"
for t in "masking-off $p_off" "detectors $p_det" "detectors+rules $p_rules"; do
    read -r name port <<<"$t"
    printf '%-16s %s\n' "$name" "$(PGPASSWORD=$key "$pgbin/psql" -X -A -t -p "$port" -U bench bench -c 'SELECT email, phone, ssn, card, notes FROM customers WHERE id = 7')"
done
