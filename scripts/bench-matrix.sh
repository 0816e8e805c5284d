#!/usr/bin/env bash
# The benchmark matrix behind docs/benchmarks.md: a fresh 3-node local cluster (release build, fsync on),
# 256-byte values over 100k keys, each run REPEAT times, with the node processes' CPU time per operation;
# the machine's own floors (fdatasync, loopback round trip) are measured in the same run.
#   - sets and linearizable gets at 1/16/64/256 clients sharing at most 64 connections ("shared");
#   - 256 independent clients, each with its own connection and one request in flight ("own");
#   - the same 256 independent clients reading with leader leases on (lease_reads = true), and with
#     stale reads spread over every node (`stale 1000 get`).
# Usage: scripts/bench-matrix.sh [seconds per run, default 5] [repeat, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
REPEAT=${2:-3}
PORT=${PORT:-7400}
DIR=$(mktemp -d /tmp/raftkv-bench.XXXXXX)
BIN=target/release/raftkv
cargo build --release --bin raftkv >&2
ADDR="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
CLUSTER=
start_cluster() {
  "$BIN" cluster --nodes 3 --dir "$DIR/cluster" --port "$PORT" > "$DIR/cluster.out" 2>&1 &
  CLUSTER=$!
  for _ in $(seq 1 100); do grep -q "^leader:" "$DIR/cluster.out" && break; sleep 0.2; done
}
stop_cluster() { kill -TERM "$CLUSTER" 2>/dev/null; wait "$CLUSTER" 2>/dev/null || true; }
trap 'stop_cluster; rm -rf "$DIR"' EXIT
bench() { # label op clients extra-args...
  local label=$1 op=$2 clients=$3
  shift 3
  for run in $(seq 1 "$REPEAT"); do
    printf '%s\t%s\t%s\t' "$label" "$clients" "$run"
    "$BIN" bench --addr "$ADDR" --clients "$clients" --op "$op" --keys 100000 --duration "$SECS" \
      --cluster-dir "$DIR/cluster" --json "$@" || true
  done
}
start_cluster
"$BIN" bench --addr "$ADDR" --calibrate --calibrate-dir "$DIR" --clients 1 --duration 1 --op set --json
# Write every key once for the read runs (the later get runs skip their own preload).
"$BIN" bench --addr "$ADDR" --clients 64 --op get --keys 100000 --requests 1000 --json > /dev/null
for clients in 1 16 64 256; do bench "set shared" set "$clients"; done
for clients in 1 16 64 256; do bench "get shared" get "$clients" --no-preload; done
bench "set own" set 256 --conn-per-client
bench "get own" get 256 --conn-per-client --no-preload
bench "stale-get own" stale-get:1000 256 --conn-per-client --no-preload
stop_cluster
sed -i 's/^lease_reads = .*/lease_reads = true/' "$DIR/cluster/cluster.toml"
grep -q '^lease_reads' "$DIR/cluster/cluster.toml" ||
  sed -i 's/^\[tunables\]$/[tunables]\nlease_reads = true/' "$DIR/cluster/cluster.toml"
start_cluster
bench "get lease" get 1 --no-preload
bench "get lease own" get 256 --conn-per-client --no-preload
