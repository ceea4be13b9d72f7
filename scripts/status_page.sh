#!/usr/bin/env bash
# Checks `serve`'s status page in a real headless browser (Chromium from Debian: apt-get
# install chromium): a server learning a replayed file while a client asks for predictions;
# the page must load, draw its three charts with data (each canvas's data-points), show the
# model's facts, and log nothing to the console. The server runs SECONDS first (default 12):
# the page plots its once-a-second samples. With --screenshot FILE, also saves a picture.
#
#   scripts/status_page.sh [--screenshot docs/serve-status.png] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
shot=""; secs=12
while [ $# -gt 0 ]; do
  case "$1" in
    --screenshot) shot="$2"; shift 2 ;;
    *) secs="$1"; shift ;;
  esac
done
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "no chromium: apt-get install chromium" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/streamsgd
dir=$(mktemp -d)
trap 'kill $pid $client 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" gen --rows 1000000 --features 8 -o "$dir/c.ssgd" >/dev/null 2>&1
"$bin" train "$dir/c.ssgd" --save "$dir/c.model" >/dev/null 2>&1
"$bin" serve --model "$dir/c.model" --listen 127.0.0.1:0 --learn "$dir/c.ssgd" --learn-rate 200000 --learn-passes 0 > "$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
addr=$(sed -n 's|listening on http://||p' "$dir/out")
( while true; do curl -s -o /dev/null "http://$addr/predict" -d '{"rows": [[0.1, -0.3, 1.2, 0.5, -1.0, 0.0, 2.0, 0.7]]}'; sleep 0.002; done ) &
client=$!
# The page plots the server's once-a-second samples: let some accumulate.
sleep "$secs"
flags=(--headless=new --no-sandbox --disable-gpu --window-size=1280,720 --enable-logging=stderr --v=0)
"$browser" "${flags[@]}" --virtual-time-budget=8000 --dump-dom "http://$addr/" > "$dir/dom.html" 2> "$dir/console"
fail=0
for id in rate loss latency; do
  n=$(grep -o "id=\"$id\"[^>]*data-points=\"[0-9]*\"\|data-points=\"[0-9]*\"[^>]*id=\"$id\"" "$dir/dom.html" | grep -o 'data-points="[0-9]*"' | grep -o '[0-9]*' || echo 0)
  if [ "${n:-0}" -lt 3 ]; then echo "chart $id: ${n:-0} points" >&2; fail=1; fi
done
grep -q 'model version <b>[0-9]' "$dir/dom.html" || { echo "the facts line is missing" >&2; fail=1; }
if grep -q "CONSOLE" "$dir/console"; then echo "console messages:" >&2; grep "CONSOLE" "$dir/console" >&2; fail=1; fi
if [ -n "$shot" ]; then
  "$browser" "${flags[@]}" --virtual-time-budget=3000 --screenshot="$PWD/$shot" "http://$addr/" 2>/dev/null
  echo "screenshot: $shot"
fi
[ $fail = 0 ] && echo "status page: loads, three charts with data, no console messages"
exit $fail
