#!/usr/bin/env python3
"""streamsgd from Python against scikit-learn and River, same data, one process.

1. ``partial_fit`` on numpy batches of 10 000 rows x 32 features (1 000 000 rows): scikit-learn's
   SGDClassifier(loss="log_loss") and streamsgd's, defaults and scikit-learn's own algorithm
   (optimizer="sgd", batch_size=1, scale=None); throughput and holdout log loss.
2. ``learn_one`` on dicts of 32 named numbers (100 000 rows): River's
   linear_model.LogisticRegression and streamsgd.LogisticRegression; holdout log loss.

Each measurement is repeated (--repeat, default 5); the median is reported, with the spread.
Usage: python python/bench/bench.py [--rows N] [--repeat R] [--json OUT]
Needs: pip install ./python scikit-learn river
"""

import argparse
import json
import statistics
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")


def data(n, d, seed):
    rng = np.random.RandomState(seed)
    w = rng.normal(size=d)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X @ w + rng.logistic(size=n) > 0).astype(np.int64)
    return X, y


def log_loss(p, y):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def partial_fit(make, X, y, Xte, yte, batch=10_000):
    est = make()
    t = time.perf_counter()
    for i in range(0, len(y), batch):
        est.partial_fit(X[i : i + batch], y[i : i + batch], classes=[0, 1])
    seconds = time.perf_counter() - t
    return len(y) / seconds, log_loss(est.predict_proba(Xte)[:, 1], yte)


def learn_one(make, rows, y, rows_te, yte):
    m = make()
    t = time.perf_counter()
    for x, label in zip(rows, y):
        m.learn_one(x, bool(label))
    seconds = time.perf_counter() - t
    return len(y) / seconds, log_loss([m.predict_proba_one(x)[True] for x in rows_te], yte)


def summary(runs):
    rates = [r for r, _ in runs]
    return {"rows_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "log_loss": runs[-1][1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    from sklearn.linear_model import SGDClassifier as SkSGD

    import streamsgd

    X, y = data(a.rows, 32, 0)
    Xte, yte = data(100_000, 32, 1)
    # Same weights: the holdout comes from the same model (seed 0's w); regenerate with it.
    rng = np.random.RandomState(0)
    w = rng.normal(size=32)
    yte = (Xte @ w + np.random.RandomState(2).logistic(size=len(yte)) > 0).astype(np.int64)
    out = {"partial_fit": {}, "learn_one": {}}
    contenders = {
        "scikit-learn SGDClassifier": lambda: SkSGD(loss="log_loss"),
        "streamsgd SGDClassifier": lambda: streamsgd.SGDClassifier(loss="log_loss"),
        "streamsgd SGDClassifier, scikit-learn's algorithm": lambda: streamsgd.SGDClassifier(
            loss="log_loss", optimizer="sgd", batch_size=1, scale=None
        ),
    }
    for name, make in contenders.items():
        out["partial_fit"][name] = summary([partial_fit(make, X, y, Xte, yte) for _ in range(a.repeat)])
    try:
        from river import linear_model, optim
    except ImportError:
        linear_model = None
    n1 = min(a.rows, 100_000)
    names = [f"x{j}" for j in range(32)]
    rows = [dict(zip(names, map(float, r))) for r in X[:n1]]
    rows_te = [dict(zip(names, map(float, r))) for r in Xte[:20_000]]
    one = {"streamsgd LogisticRegression": lambda: streamsgd.LogisticRegression(bits=12)}
    if linear_model is not None:
        one["River LogisticRegression"] = lambda: linear_model.LogisticRegression(optimizer=optim.SGD(0.01))
    for name, make in one.items():
        out["learn_one"][name] = summary([learn_one(make, rows, y[:n1], rows_te, yte[:20_000]) for _ in range(max(1, a.repeat // 2))])
    sk = out["partial_fit"]["scikit-learn SGDClassifier"]["rows_per_s"]
    for name, r in out["partial_fit"].items():
        r["vs_sklearn"] = r["rows_per_s"] / sk
    if "River LogisticRegression" in out["learn_one"]:
        rv = out["learn_one"]["River LogisticRegression"]["rows_per_s"]
        for name, r in out["learn_one"].items():
            r["vs_river"] = r["rows_per_s"] / rv
    for part, results in out.items():
        print(part)
        for name, r in results.items():
            ratio = r.get("vs_sklearn", r.get("vs_river", 1.0))
            print(f"  {name:52s} {r['rows_per_s'] / 1e6:8.3f} M rows/s (min {r['min'] / 1e6:.3f}, max {r['max'] / 1e6:.3f})  {ratio:6.1f}x  holdout log loss {r['log_loss']:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
