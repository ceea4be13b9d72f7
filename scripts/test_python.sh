#!/usr/bin/env bash
# The Python package's tests: builds a virtual environment under target/pyenv (numpy,
# scikit-learn, scipy, pytest, maturin from PyPI), installs ./python into it (maturin builds the
# extension with cargo, sharing target/), and runs python/tests with pytest. The tests run the
# CLI too: target/release/streamsgd (built by `cargo test --release`, or here).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import numpy, sklearn, scipy, pytest, maturin" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q maturin pytest "scikit-learn>=1.6" scipy numpy
fi
[ -x target/release/streamsgd ] || cargo build --release --quiet
"$venv/bin/pip" install -q --force-reinstall --no-deps ./python
exec "$venv/bin/python" -m pytest -q python/tests "$@"
