#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a bounded time each (default 60 s): the header parser,
# whole-file open + scan, the CSV, LibSVM and VW text parsers, and the sparse parser and file. Needs the nightly toolchain (cargo fuzz uses sanitizer flags);
# installs cargo-fuzz from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in header open text_csv text_libsvm text_vw sparse_text sparse_open; do
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
