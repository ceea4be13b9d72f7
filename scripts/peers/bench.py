#!/usr/bin/env python3
"""Times streamsgd and its peers on the same data and holdout; writes results.{md,json} and
chart.{svg,png} into --dir. Run through scripts/peers/run.sh, which prepares the data.

Timing rules (stated in the table's notes):
- every number is the wall time of the learning itself, measured inside the process (no
  interpreter or process start-up): streamsgd's own report (`seconds`), VW's run_parser() (its
  C++ reader and learner), scikit-learn's partial_fit loop on arrays already in memory (loading
  and conversion not timed), River's learn_one loop on dicts already built (not timed);
- median of --repeat runs, with min and max;
- one pass over the first 90 % of the rows; every model is scored on the same last 10 %, and so
  are the true generating weights.
"""
import argparse, json, math, os, platform, statistics, subprocess, sys, time
import numpy as np

TASKS = {"logistic": "classification", "hinge": "classification", "squared": "regression"}


def read_ssgd(path):
    """X (rows × d, float32) and y from a .ssgd file, per docs/FORMAT.md."""
    raw = np.fromfile(path, dtype=np.uint8)
    assert raw[:8].tobytes() == b"SSGDv\x00\r\n", "not a .ssgd file"
    flags, rows, d, B = (int(np.frombuffer(raw[o:o + n], dtype=t)[0]) for o, n, t in ((12, 4, "<u4"), (16, 8, "<u8"), (24, 4, "<u4"), (28, 4, "<u4")))
    cols = d + 1 + (1 if flags & 2 else 0)
    f = np.frombuffer(raw[64:].tobytes(), dtype="<f4")
    X = np.empty((rows, d), dtype=np.float32)
    y = np.empty(rows, dtype=np.float32)
    at, r = 0, 0
    while r < rows:
        n = min(B, rows - r)
        s = (n + 15) // 16 * 16
        blk = f[at:at + s * cols].reshape(cols, s)
        X[r:r + n] = blk[:d, :n].T
        y[r:r + n] = blk[d, :n]
        at += s * cols
        r += n
    return X, y


def metrics(task, margin, y):
    """Holdout metrics from margins; classification labels in {0,1} or {-1,1}."""
    margin = np.asarray(margin, dtype=np.float64)
    if TASKS[task] == "regression":
        return {"rmse": float(np.sqrt(np.mean((margin - y) ** 2)))}
    ys = np.where(y > 0, 1.0, -1.0)
    out = {"accuracy": float(np.mean((margin > 0) == (ys > 0)))}
    if task == "logistic":
        z = -ys * margin
        out["log_loss"] = float(np.mean(np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))))
    else:
        out["hinge_loss"] = float(np.mean(np.maximum(0.0, 1 - ys * margin)))
    return out


def timed(fn, repeat):
    runs = []
    result = None
    for _ in range(repeat):
        secs, result = fn()
        runs.append(secs)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs)}, result


def run_streamsgd(bin_, task, data, threads, repeat, test=None):
    loss = task
    def once():
        args = [bin_, "train", data, "--loss", loss, "--threads", str(threads), "--json"]
        args += ["--test", test] if test else ["--holdout", "0.1"]
        rep = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        return rep["seconds"], rep
    t, rep = timed(once, repeat)
    ev = rep["test"] if test else rep["holdout"]
    m = {"rmse": ev["rmse"]} if TASKS[task] == "regression" else {"accuracy": ev["accuracy"], ("log_loss" if task == "logistic" else "hinge_loss"): ev["loss"]}
    return t, rep["rows"], m


def run_vw(task, d, repeat, extra, cache):
    import vowpalwabbit
    loss = {"logistic": "logistic", "hinge": "hinge", "squared": "squared"}[task]
    train, hold = os.path.join(d, "train.vw"), os.path.join(d, "holdout.vw")
    model, cachef, preds = os.path.join(d, "vw.model"), os.path.join(d, "train.vwcache"), os.path.join(d, "vw.preds")
    # pyvw runs VW's reader and learner inside the Workspace constructor when a data file is
    # given (-d), and run_parser() does the rest; the clock covers both (VW's own set-up inside
    # the constructor is a few milliseconds), not the model write in finish().
    def learn(argv):
        t0 = time.perf_counter()
        ws = vowpalwabbit.Workspace(arg_str=argv)
        if not ws.parser_ran:
            ws.run_parser()
        secs = time.perf_counter() - t0
        ws.finish()
        return secs
    build = None
    if cache:
        if os.path.exists(cachef):
            os.remove(cachef)
        build = learn(f"-d {train} -c --cache_file {cachef} --loss_function {loss} {extra} --quiet")
    def once():
        src = f"--cache_file {cachef}" if cache else f"-d {train}"
        return learn(f"{src} --loss_function {loss} {extra} -f {model} --quiet"), None
    t, _ = timed(once, repeat)
    ws = vowpalwabbit.Workspace(arg_str=f"-t -i {model} -d {hold} -p {preds} --quiet")
    ws.run_parser(); ws.finish()
    margin = np.loadtxt(preds, usecols=0)
    if build is not None:
        t["cache_build_s"] = build
    return t, margin


def run_sklearn(task, Xtr, ytr, Xte, repeat):
    from sklearn.linear_model import SGDClassifier, SGDRegressor
    def make():
        if task == "squared":
            return SGDRegressor(random_state=0)
        return SGDClassifier(loss="log_loss" if task == "logistic" else "hinge", random_state=0)
    classes = np.array([0.0, 1.0])
    def once():
        m = make()
        t0 = time.perf_counter()
        for s in range(0, len(ytr), 10_000):
            if task == "squared":
                m.partial_fit(Xtr[s:s + 10_000], ytr[s:s + 10_000])
            else:
                m.partial_fit(Xtr[s:s + 10_000], ytr[s:s + 10_000], classes=classes)
        return time.perf_counter() - t0, m
    t, m = timed(once, repeat)
    margin = m.predict(Xte) if task == "squared" else m.decision_function(Xte)
    return t, margin


def run_river(task, Xtr, ytr, Xte, repeat, n=100_000):
    from river import linear_model, optim
    rows = [dict(enumerate(map(float, x))) for x in Xtr[:n]]
    ys = [float(v) if task == "squared" else bool(v > 0) for v in ytr[:n]]
    def make():
        if task == "squared":
            return linear_model.LinearRegression()
        if task == "hinge":
            return linear_model.LogisticRegression(loss=optim.losses.Hinge())
        return linear_model.LogisticRegression()
    def once():
        m = make()
        t0 = time.perf_counter()
        for x, y in zip(rows, ys):
            m.learn_one(x, y)
        return time.perf_counter() - t0, m
    t, m = timed(once, repeat)
    w = m.weights
    margin = np.array([sum(w.get(j, 0.0) * float(v) for j, v in enumerate(x)) for x in Xte]) + m.intercept
    return t, margin, n


def flink(args, task):
    """Flink ML's OnlineLogisticRegression needs Python 3.7–3.8 and a JVM; a reason when absent."""
    if task != "logistic":
        return None, "Flink ML has no online hinge/squared learner"
    py38 = [p for p in (os.path.expanduser(f"~/.pyenv/versions/{v}/bin/python") for v in ("3.8.18", "3.8")) if os.path.exists(p)]
    if not py38:
        return None, "apache-flink-ml 2.3.0 needs Python 3.7–3.8; none found"
    script = os.path.join(os.path.dirname(__file__), "flink_bench.py")
    venv = os.path.join("target", "flink-venv")
    try:
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            subprocess.run([py38[0], "-m", "venv", venv], check=True)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "apache-flink-ml==2.3.0"], check=True, timeout=1800)
        out = subprocess.run([os.path.join(venv, "bin", "python"), script, os.path.join(args.dir, "classification")], check=True, capture_output=True, text=True, timeout=1800)
        return json.loads(out.stdout.strip().splitlines()[-1]), None
    except Exception as e:  # the table says why instead of a number
        return None, f"Flink ML could not run here: {str(e).splitlines()[0][:160]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--streamsgd", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--with-flink", action="store_true")
    args = ap.parse_args()
    import sklearn, river, vowpalwabbit
    versions = {"streamsgd": subprocess.run([args.streamsgd, "--version"], capture_output=True, text=True).stdout.split()[-1],
                "vw": vowpalwabbit.__version__, "sklearn": sklearn.__version__, "river": river.__version__}
    bench = json.loads(subprocess.run([args.streamsgd, "bench", "--data", os.path.join(args.dir, "classification", "all.ssgd"), "--thread-counts", "1,2", "--repeat", "1", "--json"], check=True, capture_output=True, text=True).stdout)
    results = []
    for task, kind in TASKS.items():
        d = os.path.join(args.dir, kind)
        X, y = read_ssgd(os.path.join(d, "all.ssgd"))
        n = len(y)
        ntr = n - n // 10
        Xtr, ytr, Xte, yte = X[:ntr], y[:ntr], X[ntr:], y[ntr:]
        truth = json.load(open(os.path.join(d, "truth.json")))
        true_margin = Xte.astype(np.float64) @ np.array(truth["weights"]) + truth["bias"]
        truth_m = metrics(task, true_margin, yte)
        def add(tool, version, mode, threads, t, rows, m, note=""):
            results.append({"task": task, "tool": tool, "version": version, "mode": mode, "threads": threads, "rows": rows,
                            "rows_per_sec": rows / t["median_s"], "rows_per_sec_min": rows / t["max_s"], "rows_per_sec_max": rows / t["min_s"],
                            "timing": t, "holdout": m, "truth": truth_m, "note": note})
            print(f"{task:9} {tool:10} {mode:22} {threads}t {rows / t['median_s'] / 1e6:9.2f} M rows/s  {m}", file=sys.stderr)
        for th in (1, 2):
            # streamsgd runs are cheap and the 2-vCPU machine is noisy: at least 5 of them.
            t, rows, m = run_streamsgd(args.streamsgd, task, os.path.join(d, "all.ssgd"), th, max(5, args.repeat))
            add("streamsgd", versions["streamsgd"], ".ssgd mapped", th, t, rows, m)
            t, rows, m = run_streamsgd(args.streamsgd, task, os.path.join(d, "train.csv"), th, args.repeat, test=os.path.join(d, "holdout.csv"))
            add("streamsgd", versions["streamsgd"], "CSV text", th, t, rows, m)
        for extra, name in (("", "default"), ("--sgd", "--sgd")):
            for cache in (False, True):
                t, margin = run_vw(task, d, args.repeat, extra, cache)
                mode = f"{name}, {'cache' if cache else 'text'}"
                note = f"cache built in {t['cache_build_s']:.2f} s (not included)" if cache else ""
                add("vw", versions["vw"], mode, 1, t, ntr, metrics(task, margin, yte), note)
        t, margin = run_sklearn(task, Xtr, ytr, Xte, args.repeat)
        add("sklearn", versions["sklearn"], "partial_fit 10k", 1, t, ntr, metrics(task, margin, yte), "arrays in memory; conversion not timed")
        t, margin, rn = run_river(task, Xtr, ytr, Xte, max(1, args.repeat))
        add("river", versions["river"], "learn_one", 1, t, rn, metrics(task, margin, yte), f"trained on the first {rn} rows only")
        if args.with_flink:
            r, why = flink(args, task)
            if r:
                add("flink-ml", "2.3.0", "OnlineLogisticRegression", 1, r["timing"], r["rows"], metrics(task, np.array(r["margin"]), yte), r.get("note", ""))
            else:
                results.append({"task": task, "tool": "flink-ml", "version": "2.3.0", "mode": "OnlineLogisticRegression", "threads": 1, "why": why})
    env = {"cpu": platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip(),
           "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions,
           "bandwidth_gbps_1_thread": bench["bandwidth_gbps_1_thread"], "bandwidth_gbps_2_threads": bench["bandwidth_gbps_max_threads"],
           "bytes_per_row": bench["bytes_per_row"], "rows": bench["rows"], "features": bench["features"]}
    json.dump({"env": env, "results": results}, open(os.path.join(args.dir, "results.json"), "w"), indent=2)
    write_table(args.dir, env, results)
    write_chart(args.dir, env, results)


def fmt_metric(task, m):
    if not m:
        return "-"
    if TASKS[task] == "regression":
        return f"RMSE {m['rmse']:.4f}"
    second = "log_loss" if task == "logistic" else "hinge_loss"
    return f"acc {m['accuracy']:.4f}, {second.replace('_', ' ')} {m[second]:.4f}"


def write_table(dirname, env, results):
    lines = [f"CPU: {env['cpu']}, {env['cores']} cores; memory bandwidth (streaming a mapped file) {env['bandwidth_gbps_1_thread']:.1f} GB/s "
             f"with 1 thread, {env['bandwidth_gbps_2_threads']:.1f} GB/s with 2; rows of {env['features']} features = {env['bytes_per_row']:.0f} bytes "
             f"→ roofline {env['bandwidth_gbps_1_thread'] * 1e9 / env['bytes_per_row'] / 1e6:.0f} / {env['bandwidth_gbps_2_threads'] * 1e9 / env['bytes_per_row'] / 1e6:.0f} M rows/s.", ""]
    for task in TASKS:
        rs = [r for r in results if r["task"] == task]
        best = max((r["rows_per_sec"] for r in rs if r["tool"] == "streamsgd" and "rows_per_sec" in r), default=float("nan"))
        lines += [f"### {task} ({TASKS[task]}, {rs[0].get('rows', 0)} training rows)", "",
                  "| tool | version | mode | threads | M rows/s (median) | min–max | streamsgd best ÷ this | holdout | true weights | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            if "why" in r:
                lines.append(f"| {r['tool']} | {r['version']} | {r['mode']} | {r['threads']} | — | — | — | — | — | {r['why']} |")
                continue
            lines.append(f"| {r['tool']} | {r['version']} | {r['mode']} | {r['threads']} | {r['rows_per_sec'] / 1e6:.2f} | "
                         f"{r['rows_per_sec_min'] / 1e6:.2f}–{r['rows_per_sec_max'] / 1e6:.2f} | {best / r['rows_per_sec']:.1f}× | "
                         f"{fmt_metric(task, r['holdout'])} | {fmt_metric(task, r['truth'])} | {r['note']} |")
        lines.append("")
    lines.append("Times are the learning itself (no start-up, no data conversion), median of the runs; one pass; holdout = last 10 % of the rows.")
    open(os.path.join(dirname, "results.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_chart(dirname, env, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rs = [r for r in results if r["task"] == "logistic" and "rows_per_sec" in r]
    labels = [f"{r['tool']} {r['mode']} ({r['threads']}t)" for r in rs]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rs) + 1.5))
    colors = ["#1f77b4" if r["tool"] == "streamsgd" else "#999999" for r in rs]
    ax.barh(labels, [r["rows_per_sec"] for r in rs], color=colors)
    roof = env["bandwidth_gbps_2_threads"] * 1e9 / env["bytes_per_row"]
    ax.axvline(roof, color="red", linestyle="--", label=f"memory roofline, 2 threads ({roof / 1e6:.0f} M rows/s)")
    ax.set_xscale("log")
    ax.set_xlabel("rows/s (log scale), logistic regression, one pass")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    for ext in ("svg", "png"):
        fig.savefig(os.path.join(dirname, f"chart.{ext}"), dpi=110)


if __name__ == "__main__":
    main()
