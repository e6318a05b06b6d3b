#!/usr/bin/env bash
# Ledger benchmarks, side by side in one run: durable throughput, acknowledgement latency
# under a fixed offered load, and offline verification speed.
#
#   bench/ledger.sh            prints one JSON result per line
#   BENCH_DIR=/data bench/ledger.sh   write on another filesystem (default: under target/)
#
# Results and the machine they came from are recorded in docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gatehouse >&2
bin=target/release/gatehouse
root=${BENCH_DIR:-target/bench-data}
mkdir -p "$root"
dir=$(mktemp -d "$root/ledger.XXXXXX")
trap 'rm -rf "$dir"' EXIT

bench() {
    local name=$1
    shift
    rm -rf "$dir/d"
    printf '%-38s %s\n' "$name" "$("$bin" ledger bench --data-dir "$dir/d" "$@" 2>/dev/null)"
}

echo "# $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
bench "sync, 64 writers, 1 KiB"        --events 500000 --concurrency 64 --size 1024
bench "batched, 64 writers, 1 KiB"     --events 500000 --concurrency 64 --size 1024 --durability batched
bench "sync, 1 writer, 1 KiB"          --events 20000  --concurrency 1  --size 1024
bench "sync at 10,000/s, 1 KiB"        --events 100000 --concurrency 64 --size 1024 --rate 10000
bench "batched at 10,000/s, 1 KiB"     --events 100000 --concurrency 64 --size 1024 --rate 10000 --durability batched

# Verification speed over a million 1 KiB entries (written in batched mode to save time).
rm -rf "$dir/d"
"$bin" ledger bench --data-dir "$dir/d" --events 1000000 --concurrency 64 --size 1024 \
    --durability batched >/dev/null 2>&1
sync
printf '%-38s %s\n' "verify, 1,000,000 x 1 KiB (warm cache)" \
    "$("$bin" ledger verify --data-dir "$dir/d" 2>/dev/null)"
