#!/usr/bin/env python3
"""Summarises scripts/bench-matrix.sh output: the median of each configuration's runs."""
import collections
import json
import statistics
import sys

rows = collections.defaultdict(list)


def runs_text(runs):
    return ", ".join(f"{d['throughput_per_s']:,.0f}" for d in runs)


for line in open(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin"):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 1 and parts[0].startswith("{") and "machine" in parts[0]:
        machine = json.loads(parts[0])["machine"]
        f, r = machine["fdatasync_4k_us"], machine["loopback_rtt_64b_us"]
        print(f"machine: fdatasync 4 KiB p50 {f['p50']} µs p99 {f['p99']} µs; loopback RTT p50 {r['p50']} µs p99 {r['p99']} µs")
        continue
    if len(parts) != 4 or not parts[3].startswith("{"):
        continue
    label, clients, _, blob = parts
    rows[(label, int(clients))].append(json.loads(blob))
print("| workload | clients | throughput/s (median) | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/op | errors | runs/s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (label, clients), runs in rows.items():
    med = lambda f: statistics.median(f(d) for d in runs)
    cpu = med(lambda d: d.get("server_cpu_us_per_op", float("nan")))
    print(
        f"| {label} | {clients} | {med(lambda d: d['throughput_per_s']):,.0f} | {med(lambda d: d['latency_us']['p50']):.0f} "
        f"| {med(lambda d: d['latency_us']['p99']):.0f} | {med(lambda d: d['latency_us']['p99.9']):.0f} "
        f"| {med(lambda d: d['latency_us']['max']):.0f} | {cpu:.1f} | {sum(d['errors'] for d in runs)} "
        f"| {runs_text(runs)} |"
    )
