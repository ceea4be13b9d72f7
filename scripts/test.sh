#!/usr/bin/env bash
# The test suite: `cargo test --release`, after making sure the Kafka tests have their broker,
# then (with no arguments) the Python package's (scripts/test_python.sh) and the C ABI's
# (scripts/test_c.sh).
# tests/kafka.rs starts tansu (a Kafka-API broker with in-memory storage, from crates.io) on
# loopback; the first run builds it into ~/.cargo/bin (a debug build: under 4 minutes on 2 cores
# against about 10 for a release one, and fast enough for the tests' few MB).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${STREAMSGD_TANSU:-}" ] && ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
    echo "installing the tansu broker for the Kafka tests (once) ..." >&2
    cargo install tansu --version 0.6.0 --locked --features dynostore --debug
fi
cargo test --release "$@"
if [ $# -eq 0 ]; then
    scripts/test_python.sh
    scripts/test_c.sh
fi
