#!/usr/bin/env bash
# Runs the README's tour as written: the first ```sh block under "## Tour", line by line in
# one shell (set -e: any failing command fails the tour), in a scratch directory that sees
# the repository's data/ and the release binary on PATH. Builds the binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release --quiet
tour=$(awk '/^## Tour/ { on = 1 } on && /^```sh/ { grab = 1; next } grab && /^```/ { exit } grab { print }' README.md)
if [ -z "$tour" ]; then
    echo "tour.sh: no \`\`\`sh block under '## Tour' in README.md" >&2
    exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ln -s "$root/data" "$scratch/data"
cd "$scratch"
export PATH="$root/target/release:$PATH"
# bench keeps its generated data in the temporary directory: this one, removed at the end.
export TMPDIR="$scratch"
echo "running the README's tour in $scratch" >&2
if ! bash -euo pipefail -x -c "$tour" > tour.out; then
    echo "tour.sh: a command of the tour failed; the end of its output:" >&2
    tail -n 40 tour.out >&2
    exit 1
fi
echo "tour: $(grep -c . <<< "$tour") lines ran, every command succeeded" >&2
