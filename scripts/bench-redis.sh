#!/usr/bin/env bash
# redis-benchmark against raftkv's Redis port (leader, and a follower that relays) and against one
# local Redis 7 with `appendonly yes` and `appendfsync always`, side by side in one run, as issue 16
# asks: `-t set,get,incr,mset -d 256 -r 100000 -c 50` unpipelined and with `-P 16`. For raftkv it
# also reports the node processes' CPU time per request (all three nodes together).
# Usage: scripts/bench-redis.sh [requests per test, default 500000] [repeat, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500000}
REPEAT=${2:-1}
PORT=${PORT:-7500}
REDIS_PORT=${REDIS_PORT:-7600}
DIR=$(mktemp -d /tmp/raftkv-redis-bench.XXXXXX)
BIN=target/release/raftkv
command -v redis-benchmark > /dev/null && command -v redis-server > /dev/null || {
  echo "needs redis-benchmark and redis-server (Debian: apt-get install redis-server)" >&2
  exit 1
}
cargo build --release --bin raftkv >&2
CLUSTER=
REDIS=
cleanup() {
  [ -n "$CLUSTER" ] && kill -TERM "$CLUSTER" 2>/dev/null && wait "$CLUSTER" 2>/dev/null
  [ -n "$REDIS" ] && kill -TERM "$REDIS" 2>/dev/null && wait "$REDIS" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
"$BIN" cluster --nodes 3 --dir "$DIR/cluster" --port "$PORT" > "$DIR/cluster.out" 2>&1 &
CLUSTER=$!
for _ in $(seq 1 100); do grep -q "^leader:" "$DIR/cluster.out" && break; sleep 0.2; done
mkdir -p "$DIR/redis"
redis-server --port "$REDIS_PORT" --dir "$DIR/redis" --appendonly yes --appendfsync always \
  --save '' --daemonize no > "$DIR/redis.out" 2>&1 &
REDIS=$!
sleep 1
# The leader's and a follower's Redis ports (client port + 3000).
leader_port=$(sed -n 's/^leader: node [0-9]* at .*:\([0-9]*\)$/\1/p' "$DIR/cluster.out" | head -1)
LEADER_RESP=$((leader_port + 3000))
FOLLOWER_RESP=$PORT
for p in $PORT $((PORT + 1)) $((PORT + 2)); do
  [ "$p" != "$leader_port" ] && { FOLLOWER_RESP=$((p + 3000)); break; }
done
node_cpu_ticks() { # user+system ticks of the cluster's node processes
  local total=0
  for pid in $(pgrep -f "$DIR/cluster" | grep -v "^$CLUSTER$"); do
    read -r -a f < "/proc/$pid/stat" 2>/dev/null || continue
    total=$((total + f[13] + f[14]))
  done
  echo "$total"
}
run() { # label port pipeline
  local label=$1 port=$2 pipeline=$3
  for r in $(seq 1 "$REPEAT"); do
    local before after
    before=$(node_cpu_ticks)
    redis-benchmark -h 127.0.0.1 -p "$port" -t set,get,incr,mset -d 256 -r 100000 -c 50 \
      -n "$N" -P "$pipeline" --csv -q 2>/dev/null | tr -d '"' |
      awk -F, -v l="$label" -v p="$pipeline" -v r="$r" 'NR>1 {printf "%s\tP=%s\trun %s\t%s\t%.0f/s\tp50 %s ms\tp99 %s ms\n", l, p, r, $1, $2, $5, $7}'
    after=$(node_cpu_ticks)
    if [ "$label" != redis ]; then
      printf '%s\tP=%s\trun %s\tnode CPU\t%.1f us per request (4 tests)\n' \
        "$label" "$pipeline" "$r" "$(echo "($after - $before) * 10000 / (4 * $N)" | bc -l)"
    fi
  done
}
echo "leader resp port $LEADER_RESP, follower $FOLLOWER_RESP, redis $REDIS_PORT"
for pipeline in 1 16; do
  run redis "$REDIS_PORT" "$pipeline"
  run leader "$LEADER_RESP" "$pipeline"
  run follower "$FOLLOWER_RESP" "$pipeline"
done
