#!/usr/bin/env bash
# The C ABI's test: builds libstreamsgd_c.a (capi/), compiles capi/tests/test.c with gcc under
# AddressSanitizer and UBSan, and runs it on a model the CLI trained with --missing mean
# --scale standard (its predictions must be what `streamsgd predict` prints).
set -euo pipefail
cd "$(dirname "$0")/.."
# The crate's own tests: include/streamsgd.h is what cbindgen makes of the source; a panic
# becomes a status.
cargo test --release --quiet -p streamsgd-c
cargo build --release --quiet -p streamsgd-c
[ -x target/release/streamsgd ] || cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bin=target/release/streamsgd
"$bin" gen --task regression --rows 3000 --features 4 --missing-rate 0.1 -o "$dir/r.csv" >/dev/null
"$bin" train "$dir/r.csv" --loss squared --missing mean --scale standard --save "$dir/r.model" >/dev/null
"$bin" predict --model "$dir/r.model" "$dir/r.csv" > "$dir/printed" 2>/dev/null
gcc -std=c11 -Wall -Wextra -Werror -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
    -Iinclude capi/tests/test.c target/release/libstreamsgd_c.a -lpthread -ldl -lm -o "$dir/test_c"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$dir/test_c" "$dir" "$dir/r.model" "$dir/r.csv" "$dir/printed"
