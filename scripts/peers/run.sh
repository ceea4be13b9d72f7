#!/usr/bin/env bash
# Side-by-side: streamsgd vs Vowpal Wabbit, scikit-learn and River (and Flink ML with
# --with-flink) on the same generated data, same train/holdout split (last 10 % held out).
#
#   scripts/peers/run.sh [--rows N] [--features D] [--quick] [--repeat R] [--with-flink]
#   scripts/peers/run.sh --sparse [--eat-rate] [--rows N] [--repeat R]   # gen --task ctr (or eat-rate)
#
# Sets up its own Python virtual environment under target/peers-venv (PyPI: vowpalwabbit 9.x,
# scikit-learn, river, numpy, matplotlib), builds streamsgd, generates the data once per task
# with `streamsgd gen` (same seed) as .ssgd, .vw and .csv, and writes
# target/peers/<rows>/results.{md,json} and chart.{svg,png}.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=1000000; features=32; repeat=3; flink=0; sparse=0; stask=ctr; cross=cd
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --features) features="$2"; shift 2 ;;
    --quick) rows=200000; shift ;;
    --repeat) repeat="$2"; shift 2 ;;
    --with-flink) flink=1; shift ;;
    --sparse) sparse=1; shift ;;
    --eat-rate) stask=eat-rate; cross=AB; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet
venv=target/peers-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import vowpalwabbit, sklearn, river, numpy, matplotlib" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "vowpalwabbit>=9,<10" scikit-learn river numpy matplotlib
fi
if [ "$sparse" = 1 ]; then
  "$venv/bin/python" -c "import scipy" 2>/dev/null || "$venv/bin/pip" install -q scipy
  dir="target/peers/sparse-$stask-$rows"; mkdir -p "$dir"
  if [ ! -f "$dir/done" ]; then
    target/release/streamsgd gen --task "$stask" --rows "$rows" --seed 7 -o "$dir/all.vw" --truth "$dir/truth.json"
    target/release/streamsgd convert "$dir/all.vw" -o "$dir/all.ssgd"
    touch "$dir/done"
  fi
  exec "$venv/bin/python" scripts/peers/sparse.py --dir "$dir" --streamsgd target/release/streamsgd --repeat "$repeat" --task "$stask" --cross "$cross"
fi
out="target/peers/$rows"
mkdir -p "$out"
bin=target/release/streamsgd
holdout=$((rows / 10)); train=$((rows - holdout))
for task in classification regression; do
  dir="$out/$task"; mkdir -p "$dir"
  # Noise: Gaussian σ for regression; for classification it is a label-flip rate, so 0 (the
  # logistic link already makes the labels noisy).
  noise=0; [ "$task" = regression ] && noise=0.5
  if [ ! -f "$dir/done" ]; then
    "$bin" gen --task "$task" --rows "$rows" --features "$features" --seed 7 --noise "$noise" -o "$dir/all.ssgd" --truth "$dir/truth.json" >/dev/null
    for ext in vw csv; do "$bin" gen --task "$task" --rows "$rows" --features "$features" --seed 7 --noise "$noise" -o "$dir/all.$ext" >/dev/null; done
    # Train = first 90 % of the rows, holdout = last 10 %, in stream order, in every format.
    head -n "$train" "$dir/all.vw" > "$dir/train.vw"; tail -n "$holdout" "$dir/all.vw" > "$dir/holdout.vw"
    head -n $((train + 1)) "$dir/all.csv" > "$dir/train.csv"
    { head -n 1 "$dir/all.csv"; tail -n "$holdout" "$dir/all.csv"; } > "$dir/holdout.csv"
    rm -f "$dir/all.vw" "$dir/all.csv"
    touch "$dir/done"
  fi
done
args=(--dir "$out" --streamsgd "$bin" --repeat "$repeat")
[ "$flink" = 1 ] && args+=(--with-flink)
"$venv/bin/python" scripts/peers/bench.py "${args[@]}"
