#!/usr/bin/env python3
"""Sparse side by side: streamsgd and its peers on the same hashed click logs (`streamsgd gen
--task ctr`), the same rows, the same holdout (the last 10 %); writes sparse.{md,json} into --dir.
Run through scripts/peers/run.sh --sparse, which builds streamsgd and the Python environment.

Timing rules (stated in the table's notes):
- the wall time of the learning itself, measured inside the process: streamsgd's own report
  (`seconds`, from its mapped sparse .ssgd), VW's run_parser() from its cache (built beforehand,
  not timed), scikit-learn's partial_fit loop over scipy CSR chunks already built, River's
  learn_one loop over dicts already built;
- median of --repeat runs (min and max beside it); River runs once (it is the slowest by far);
- one pass; every model is scored on the same last 10 % of the rows, and so is the hidden
  model (the oracle: `gen` prints its log loss).
"""
import argparse, json, math, os, platform, statistics, subprocess, sys, time
import numpy as np


def log_loss(p, y):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def scores(p, y):
    return {"log_loss": log_loss(p, y), "accuracy": float(np.mean((np.asarray(p) > 0.5) == (y > 0.5)))}


def vw_tokens(line, cross):
    """A VW line's features as strings (namespace=name), values, and the label (0/1)."""
    head, *parts = line.rstrip("\n").split("|")
    label = 1.0 if head.split()[0] == "1" else 0.0
    feats, by_ns = {}, {}
    for part in parts:
        ns, *toks = part.split()
        for t in toks:
            name, _, v = t.partition(":")
            key = f"{ns}={name}"
            feats[key] = float(v) if v else 1.0
            by_ns.setdefault(ns, []).append(key)
    if cross:
        for a in by_ns.get(cross[0], []):
            for b in by_ns.get(cross[1], []):
                feats[f"{a}*{b}"] = feats[a] * feats[b]
    return feats, label


def timed(f, repeat):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}, out


def run_streamsgd(bin_, ssgd, threads, cross, repeat):
    rows = []
    for _ in range(repeat):
        args = [bin_, "train", ssgd, "--holdout", "0.1", "--threads", str(threads), "--json"] + (["--interactions", cross] if cross else [])
        r = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append(r)
    ts = [r["seconds"] for r in rows]
    h = rows[-1]["holdout"]
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}, {"log_loss": h["loss"], "accuracy": h["accuracy"]}


def run_vw(d, bits, cross, repeat, y_hold):
    import vowpalwabbit
    cache, model, preds = (os.path.join(d, n) for n in ("vw.cache", "vw.model", "vw.preds"))
    q = f"-q {cross}" if cross else ""

    def learn(argv):
        ws = vowpalwabbit.Workspace(arg_str=argv)
        ws.run_parser()
        ws.finish()

    if os.path.exists(cache):
        os.remove(cache)
    learn(f"-d {d}/train.vw -c --cache_file {cache} --loss_function logistic -b {bits} {q} -f {model} --quiet")
    t, _ = timed(lambda: learn(f"--cache_file {cache} --loss_function logistic -b {bits} {q} -f {model} --quiet"), repeat)
    ws = vowpalwabbit.Workspace(arg_str=f"-t -i {model} -d {d}/holdout.vw -p {preds} --quiet")
    ws.run_parser()
    ws.finish()
    m = np.loadtxt(preds, usecols=0, ndmin=1)
    return t, scores(1 / (1 + np.exp(-m)), y_hold)


def csr(rows, bits):
    from sklearn.feature_extraction import FeatureHasher
    return FeatureHasher(n_features=1 << bits, input_type="dict", alternate_sign=False).transform(r for r, _ in rows)


def run_sklearn(train, hold, y_train, y_hold, repeat):
    from sklearn.linear_model import SGDClassifier
    chunks = [(train[i:i + 10_000], y_train[i:i + 10_000]) for i in range(0, train.shape[0], 10_000)]

    def fit():
        m = SGDClassifier(loss="log_loss")
        for X, y in chunks:
            m.partial_fit(X, y, classes=[0.0, 1.0])
        return m

    t, m = timed(fit, repeat)
    return t, scores(m.predict_proba(hold)[:, 1], y_hold)


def run_river(train_rows, hold_rows, y_hold):
    from river import linear_model, optim
    m = linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.2))
    data = [(f, y == 1.0) for f, y in train_rows]
    t = time.perf_counter()
    for f, y in data:
        m.learn_one(f, y)
    secs = time.perf_counter() - t
    p = [m.predict_proba_one(f).get(True, 0.0) for f, _ in hold_rows]
    return {"median": secs, "min": secs, "max": secs}, scores(p, y_hold)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--streamsgd", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--river-rows", type=int, default=1_000_000, help="River learns at most this many rows (it is slow)")
    ap.add_argument("--cross", default="cd", help="the namespaces whose cross the label needs (ctr: cd, eat-rate: AB)")
    ap.add_argument("--task", default="ctr")
    a = ap.parse_args()
    d = a.dir
    truth = json.load(open(os.path.join(d, "truth.json")))
    lines = open(os.path.join(d, "all.vw")).readlines()
    n_hold = len(lines) // 10
    train_lines, hold_lines = lines[:-n_hold], lines[-n_hold:]
    with open(os.path.join(d, "train.vw"), "w") as f:
        f.writelines(train_lines)
    with open(os.path.join(d, "holdout.vw"), "w") as f:
        f.writelines(hold_lines)
    y_hold = np.array([1.0 if l.startswith("1") else 0.0 for l in hold_lines])
    ssgd = os.path.join(d, "all.ssgd")
    results = []

    def add(name, cross, t, s, rows):
        results.append({"learner": name, "cross": bool(cross), "rows": rows, "seconds": t, "rows_per_sec": rows / t["median"], **s})
        print(f"{name:<44} {rows / t['median'] / 1e6:8.3f} M rows/s  log loss {s['log_loss']:.4f}  accuracy {s['accuracy']:.4f}", flush=True)

    n_train = len(train_lines)
    for cross in ("", a.cross):
        for threads in (1, 2):
            t, s = run_streamsgd(a.streamsgd, ssgd, threads, cross, a.repeat)
            add(f"streamsgd {threads} thread(s) {'--interactions ' + cross if cross else ''}", cross, t, s, n_train)
        for bits in (18, 24):
            t, s = run_vw(d, bits, cross, a.repeat, y_hold)
            add(f"Vowpal Wabbit -b {bits} {'-q ' + cross if cross else ''} (cache)", cross, t, s, n_train)
        # Training rows become dicts one at a time (10^7 of them at once would not fit in memory).
        rows_hold = [vw_tokens(l, cross) for l in hold_lines]
        y_train = np.array([1.0 if l.split(maxsplit=1)[0] == "1" else 0.0 for l in train_lines])
        x_train = csr((vw_tokens(l, cross) for l in train_lines), 18)
        t, s = run_sklearn(x_train, csr(rows_hold, 18), y_train, y_hold, a.repeat)
        del x_train
        add(f"scikit-learn SGDClassifier, CSR 2^18 {'+ cross ' + cross if cross else ''}", cross, t, s, n_train)
        k = min(a.river_rows, n_train)
        t, s = run_river([vw_tokens(l, cross) for l in train_lines[:k]], rows_hold, y_hold)
        add(f"River LogisticRegression (AdaGrad) {'+ cross ' + cross if cross else ''}" + (f", first {k} rows" if k < n_train else ""), cross, t, s, k)
    oracle = truth["oracle_holdout_log_loss"]
    env = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    json.dump({"rows": len(lines), "oracle_holdout_log_loss": oracle, "env": env, "results": results}, open(os.path.join(d, "sparse.json"), "w"), indent=1)
    with open(os.path.join(d, "sparse.md"), "w") as f:
        f.write(f"`gen --task {a.task}`, {len(lines)} rows: {n_train} learned in one pass, the last {n_hold} held out. "
                f"The hidden model's holdout log loss: {oracle:.4f}. {env['cores']} cores.\n\n")
        f.write("| learner | rows/s (median) | min–max s | holdout log loss | accuracy |\n|---|---|---|---|---|\n")
        for r in results:
            t = r["seconds"]
            f.write(f"| {r['learner']} | {r['rows_per_sec'] / 1e6:.3f} M | {t['min']:.2f}–{t['max']:.2f} | {r['log_loss']:.4f} | {r['accuracy']:.4f} |\n")
    print(f"oracle holdout log loss {oracle:.4f}; wrote {d}/sparse.md and sparse.json")


if __name__ == "__main__":
    main()
