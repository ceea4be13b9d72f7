#!/usr/bin/env bash
# Load test of `streamsgd serve` on loopback with oha (an HTTP load generator from crates.io,
# installed on first use): single-row JSON predictions at the peak (32 connections, flat out)
# and at half the peak's rate, while the server learns a replayed file at --learn-rate rows/s;
# then the same two without learning, to see what the snapshot swaps cost. Prints one line per
# run: requests/s and latency percentiles (ms). Bounded: 4 runs of SECONDS (default 8).
#
#   scripts/serve_load.sh [SECONDS] [LEARN_RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}; rate=${2:-1000000}
command -v oha >/dev/null || [ -x "$HOME/.cargo/bin/oha" ] || cargo install oha --locked
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
cargo build --release --quiet
bin=target/release/streamsgd
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" gen --rows 2000000 --features 8 -o "$dir/c.ssgd" >/dev/null 2>&1
"$bin" train "$dir/c.ssgd" --save "$dir/c.model" >/dev/null 2>&1
body='{"rows": [[0.1, -0.3, 1.2, 0.5, -1.0, 0.0, 2.0, 0.7]]}'
run() { # label, extra oha flags
  "$oha" -z "${secs}s" -c 32 $2 -m POST -T application/json -d "$body" --no-tui --output-format json \
    "http://$addr/predict" > "$dir/oha.json"
  python3 - "$1" "$dir/oha.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2])); s = d["summary"]; p = d["latencyPercentiles"]
ms = lambda k: p[k] * 1000
codes = d.get("statusCodeDistribution", {})
print(f"{sys.argv[1]:32s} {s['requestsPerSec']:9.0f} req/s  p50 {ms('p50'):.3f}  p99 {ms('p99'):.3f}  p99.9 {ms('p99.9'):.3f}  p99.99 {ms('p99.99'):.3f} ms  statuses {codes}")
PY
  python3 -c "import json; print(int(json.load(open('$dir/oha.json'))['summary']['requestsPerSec']))" > "$dir/rps"
}
serve() { # extra serve flags
  "$bin" serve --model "$dir/c.model" --listen 127.0.0.1:0 "$@" > "$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's|listening on http://||p' "$dir/out")
}
serve --learn "$dir/c.ssgd" --learn-rate "$rate" --learn-passes 0
run "peak, learning $rate rows/s" ""
peak=$(cat "$dir/rps")
run "half ($((peak / 2)) req/s), learning" "-q $((peak / 2))"
echo "server: $(curl -s "http://$addr/stats")"
kill -TERM $pid; wait $pid || true
serve
run "peak, not learning" ""
peak=$(cat "$dir/rps")
run "half ($((peak / 2)) req/s), not learning" "-q $((peak / 2))"
kill -TERM $pid; wait $pid || true
