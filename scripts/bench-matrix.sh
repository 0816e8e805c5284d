#!/usr/bin/env bash
# The benchmark matrix behind docs/benchmarks.md: a fresh 3-node local cluster (release build, fsync on),
# 256-byte values over 100k keys, sets and linearizable gets at 1/16/64/256 clients, each run REPEAT
# times; the machine's own floors (fdatasync, loopback round trip) are measured in the same run.
# Usage: scripts/bench-matrix.sh [seconds per run, default 5] [repeat, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
REPEAT=${2:-3}
PORT=${PORT:-7400}
DIR=$(mktemp -d /tmp/raftkv-bench.XXXXXX)
BIN=target/release/raftkv
cargo build --release --bin raftkv >&2
"$BIN" cluster --nodes 3 --dir "$DIR/cluster" --port "$PORT" > "$DIR/cluster.out" 2>&1 &
CLUSTER=$!
trap 'kill -TERM $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do grep -q "^leader:" "$DIR/cluster.out" && break; sleep 0.2; done
ADDR="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
"$BIN" bench --addr "$ADDR" --calibrate --calibrate-dir "$DIR" --clients 1 --duration 1 --op set --json
# Write every key once for the read runs (the later get runs skip their own preload).
"$BIN" bench --addr "$ADDR" --clients 64 --op get --keys 100000 --requests 1000 --json > /dev/null
for op in set get; do
  for clients in 1 16 64 256; do
    for run in $(seq 1 "$REPEAT"); do
      extra=()
      [ "$op" = get ] && extra=(--no-preload)
      printf '%s\t%s\t%s\t' "$op" "$clients" "$run"
      "$BIN" bench --addr "$ADDR" --clients "$clients" --op "$op" --keys 100000 --duration "$SECS" \
        "${extra[@]}" --json
    done
  done
done
