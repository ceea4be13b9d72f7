#!/bin/bash
# Sparse cluster-train on loopback, 1-3 processes of one worker each, on a sparse .ssgd file:
# rows/s, merges, bytes each worker sends per merge against the whole table's, holdout loss.
#   scripts/cluster_sparse.sh FILE.ssgd [K] [BITS]
# e.g. on the peers' 10^7-row ctr stream (scripts/peers/run.sh --sparse --rows 10000000):
#   scripts/cluster_sparse.sh target/peers/sparse-ctr-10000000/all.ssgd 128 22
set -euo pipefail
data=$1; k=${2:-32}; bits=${3:-18}
bin=${STREAMSGD:-target/release/streamsgd}
flags=(--holdout 0.1 --interactions cd --merge-every "$k" --bits "$bits" --json)
hosts=$(mktemp)
trap 'rm -f "$hosts"' EXIT
for n in 1 2 3; do
  : > "$hosts"
  for p in $(seq 0 $((n - 1))); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "127.0.0.1:$port" >> "$hosts"
  done
  for p in $(seq 1 $((n - 1))); do "$bin" cluster-train "$data" "${flags[@]}" -- -n "$n" -p "$p" -h "$hosts" > /dev/null 2>&1 & done
  "$bin" cluster-train "$data" "${flags[@]}" -- -n "$n" -p 0 -h "$hosts" 2> /dev/null | tail -1 | python3 -c "
import json, sys
r = json.load(sys.stdin)
print(f\"K={$k} bits={$bits} processes={$n}: {r['rows_per_sec']/1e6:.2f} M rows/s, {r['merges']} merges, \"
      f\"{r['merge_bytes_per_worker']} of {r['table_bytes_per_worker']} bytes per worker per merge \"
      f\"({r['merge_bytes_per_worker']/r['table_bytes_per_worker']:.1%}), merge {r['merge_us_mean']/1e3:.1f} ms, \"
      f\"holdout log loss {r['holdout']['loss']:.4f}\")"
  wait
done
