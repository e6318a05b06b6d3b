#!/usr/bin/env bash
# What masking costs the gateway in instructions per transaction: a steady yardstick on a
# machine whose TPS moves by a third from one run to the next. Each variant is its own
# gateway under `valgrind --tool=callgrind`, which counts the instructions it executes,
# whatever else the machine is doing:
#   off        [resources.masking] enabled = false
#   detectors  every built-in detector (`detectors = "all"`, IP addresses too)
#   rules      the same plus column rules on ssn (redact) and card (partial:4)
# One pgbench client runs TXNS transactions of the `bench/masking.sh` script (ROWS customer
# rows of 8 columns each) after a warm-up of 200; only those are counted.
#
#   bench/masking-instructions.sh            defaults: 2,000 transactions, 20 rows
#   TXNS=1000 ROWS=1 bench/masking-instructions.sh
#   GATEHOUSE=/path/to/gatehouse bench/masking-instructions.sh   another build (an older one,
#                                                                 to compare), not rebuilt
#
# The summary gives each variant's instructions per transaction and what it adds to `off`,
# with SHA-256 set apart: under valgrind the sha2 crate takes its portable code path (no
# SHA extensions), which costs several times what it does on the real machine, and masked
# rows are shorter, so they are hashed for less. Then what grew most, by source file and
# function (code inlined into a function counts under the file it was written in).
# Installs PostgreSQL and valgrind with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TXNS=${TXNS:-2000}
ROWS=${ROWS:-20}

if [ -n "${GATEHOUSE:-}" ]; then
    gatehouse=$GATEHOUSE
    [ -x "$gatehouse" ] || { echo "GATEHOUSE=$gatehouse is not an executable gatehouse binary" >&2; exit 2; }
else
    cargo build --release -p gatehouse >&2
    gatehouse=$PWD/target/release/gatehouse
fi
# shellcheck source=bench/customers.sh
EXTRA_PACKAGES=valgrind . bench/customers.sh

key=$("$gatehouse" keys generate --name bench | awk 'NR == 1 {print $NF}')
hash=$(printf %s "$key" | "$gatehouse" keys hash)
bench() { # port transactions
    (cd "$work" && PGPASSWORD=$key "$pgbin/pgbench" -n -M prepared -f rows.sql -c 1 -t "$2" -p "$1" -U bench bench >/dev/null)
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ); $TXNS transactions of $ROWS rows x 8 columns, one client, each variant its own gateway under callgrind"
for variant in off detectors rules; do
    port=$(free_port); admin=$(free_port)
    case $variant in
        off) masking=$'[resources.masking]\nenabled = false' ;;
        detectors) masking=$'[resources.masking]\ndetectors = "all"' ;;
        rules) masking=$'[resources.masking]\ndetectors = "all"\n[[resources.masking.columns]]\ncolumn = "public.customers.ssn"\n[[resources.masking.columns]]\ncolumn = "customers.card"\nstrategy = "partial:4"' ;;
    esac
    cat > "$work/$variant.toml" <<TOML
data_dir = "$work/data-$variant"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$admin"
[[resources]]
name = "bench"
kind = "postgres"
durability = "batched"
listen = "127.0.0.1:$port"
target = "127.0.0.1:$pg_port"
database = "bench"
[resources.credentials]
user = "app"
password_file = "$work/target-pw"
$masking
[[identities]]
name = "bench"
kind = "service"
key_hash = "$hash"
TOML
    valgrind --tool=callgrind --callgrind-out-file="$work/$variant.out" \
        "$gatehouse" serve --config "$work/$variant.toml" 2>"$work/$variant.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
    echo "$variant: warming up, then $TXNS transactions" >&2
    bench "$port" 200
    callgrind_control -z "$pid" >/dev/null
    bench "$port" "$TXNS"
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # The dump asked for is the first part file; the one written at exit is not counted.
    mv "$work/$variant.out.1" "$work/$variant.counted"
done

python3 - "$work" "$TXNS" <<'PY'
import collections, re, subprocess, sys

work, txns = sys.argv[1], int(sys.argv[2])
# Frames that were on the stack when the counters were zeroed (a thread's start, tokio's
# worker loop and the task it polls) are reported with their threads' whole counts, not
# their own: they are left out of the list of what grew.
ON_STACK = ("tokio::runtime::", "thread_start", "start_thread", ":clone", "{{vtable.shim}}",
            "__rust_begin_short_backtrace")

def functions(variant):
    """Instructions by source file and function (exclusive), and the program's total."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--auto=no", "--tree=none", "--threshold=100",
         f"{work}/{variant}.counted"], capture_output=True, text=True, check=True).stdout
    counts, total = collections.Counter(), 0
    for line in out.splitlines():
        m = re.match(r"\s*([0-9,]+) (?:\([^)]*\))?\s+(.*)", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = n
            continue
        name = re.sub(r" \[.*\]$", "", m.group(2))
        name = re.sub(r"^.*/registry/src/[^/]+/|^/rustc/[0-9a-f]+/", "", name)
        counts[name] += n
    return counts, total

def sha(name):
    return "sha2::" in name

runs = {v: functions(v) for v in ("off", "detectors", "rules")}
off, off_total = runs["off"]
off_sha = sum(n for k, n in off.items() if sha(k))
print(f"{'variant':<10} {'instr/txn':>10} {'SHA-256':>9} {'the rest':>9} {'added':>8}")
for variant, (counts, total) in runs.items():
    hashed = sum(n for k, n in counts.items() if sha(k))
    rest = (total - hashed) / txns
    added = rest - (off_total - off_sha) / txns
    print(f"{variant:<10} {total / txns:>10.0f} {hashed / txns:>9.0f} {rest:>9.0f} {added:>+8.0f}")
for variant in ("detectors", "rules"):
    counts = runs[variant][0]
    grew = sorted(((counts[k] - off[k]) / txns, k) for k in set(counts) | set(off)
                  if not sha(k) and not any(s in k for s in ON_STACK))
    print(f"# {variant}: what grew most (source file: function), instructions per transaction")
    for n, name in reversed(grew[-15:]):
        if n > 0:
            print(f"  {n:>8.0f}  {name[:120]}")
PY
