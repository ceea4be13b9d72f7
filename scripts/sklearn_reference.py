#!/usr/bin/env python3
"""Reference numbers from scikit-learn for the learner's accuracy tests (tests/learner.rs).

Split: the first 80 % of each bundled CSV's rows (file order) train, the last 20 % are the
holdout, exactly as the Rust tests split them. scikit-learn's models see standardised features
(StandardScaler fitted on the training rows: its SGD learners need it); streamsgd sees the raw
features (its normalized optimizer is scale-invariant).

Usage: python3 -m venv target/pyref && target/pyref/bin/pip install scikit-learn==1.9.1 numpy
       target/pyref/bin/python scripts/sklearn_reference.py > scripts/sklearn_reference.json
"""
import json, sys
import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression, LogisticRegression, QuantileRegressor, SGDClassifier, SGDRegressor
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, hinge_loss
from sklearn.preprocessing import StandardScaler

def load(path):
    data = np.genfromtxt(path, delimiter=",", names=True)
    cols = data.dtype.names
    X = np.array([data[c] for c in cols[:-1]]).T
    y = data[cols[-1]]
    n = int(len(y) * 0.8)
    sc = StandardScaler().fit(X[:n])
    return sc.transform(X[:n]), y[:n], sc.transform(X[n:]), y[n:]

def main():
    out = {"sklearn": sklearn.__version__, "split": "first 80% train, last 20% holdout (file order)"}
    Xtr, ytr, Xte, yte = load("data/breast_cancer.csv")
    cls = {}
    lr = LogisticRegression(max_iter=10000).fit(Xtr, ytr)
    cls["LogisticRegression"] = {"accuracy": accuracy_score(yte, lr.predict(Xte)), "log_loss": log_loss(yte, lr.predict_proba(Xte))}
    sgd = SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr)
    cls["SGDClassifier_log"] = {"accuracy": accuracy_score(yte, sgd.predict(Xte)), "log_loss": log_loss(yte, sgd.predict_proba(Xte))}
    svm = SGDClassifier(loss="hinge", random_state=0).fit(Xtr, ytr)
    cls["SGDClassifier_hinge"] = {"accuracy": accuracy_score(yte, svm.predict(Xte)), "hinge_loss": hinge_loss(2 * yte - 1, svm.decision_function(Xte))}
    out["breast_cancer"] = {"train_rows": len(ytr), "holdout_rows": len(yte), **cls}
    Xtr, ytr, Xte, yte = load("data/diabetes.csv")
    ols = LinearRegression().fit(Xtr, ytr)
    sgdr = SGDRegressor(random_state=0, max_iter=10000).fit(Xtr, ytr)
    # Linear SVR: the ε-insensitive loss (ε = 0.1, scikit-learn's default), and the median by
    # the pinball loss (QuantileRegressor solves it exactly, without regularisation).
    svr = SGDRegressor(loss="epsilon_insensitive", epsilon=0.1, random_state=0, max_iter=10000).fit(Xtr, ytr)
    eps = lambda p: float(np.mean(np.maximum(np.abs(p - yte) - 0.1, 0.0)))
    med = QuantileRegressor(quantile=0.5, alpha=0.0).fit(Xtr, ytr)
    pinball = lambda p: float(np.mean(np.where(yte >= p, 0.5 * (yte - p), 0.5 * (p - yte))))
    out["diabetes"] = {
        "train_rows": len(ytr), "holdout_rows": len(yte),
        "LinearRegression": {"rmse": mean_squared_error(yte, ols.predict(Xte)) ** 0.5},
        "SGDRegressor": {"rmse": mean_squared_error(yte, sgdr.predict(Xte)) ** 0.5},
        "SGDRegressor_epsilon_insensitive": {"epsilon_insensitive_loss": eps(svr.predict(Xte)), "rmse": mean_squared_error(yte, svr.predict(Xte)) ** 0.5},
        "QuantileRegressor_median": {"pinball_loss": pinball(med.predict(Xte)), "rmse": mean_squared_error(yte, med.predict(Xte)) ** 0.5},
    }
    # adult: the last 9768 rows (20 %) held out; categories one-hot, numbers standardised.
    import csv
    from scipy.sparse import csr_matrix, hstack
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder
    rows = list(csv.reader(open("data/adult.csv")))[1:]
    cat, num = [1, 3, 5, 6, 7, 8, 9, 13], [0, 2, 4, 10, 11, 12]
    Xc = [[r[i] for i in cat] for r in rows]
    Xn = np.array([[float(r[i]) for i in num] for r in rows])
    y = np.array([int(r[-1]) for r in rows])
    n = len(rows) - round(0.2 * len(rows))
    enc, sc = OneHotEncoder(handle_unknown="ignore").fit(Xc[:n]), StandardScaler().fit(Xn[:n])
    X = hstack([enc.transform(Xc), csr_matrix(sc.transform(Xn))]).tocsr()
    p = LogisticRegression(max_iter=5000).fit(X[:n], y[:n]).predict_proba(X[n:])[:, 1]
    out["adult"] = {"train_rows": n, "holdout_rows": len(rows) - n, "LogisticRegression": {
        "accuracy": accuracy_score(y[n:], p > 0.5), "log_loss": log_loss(y[n:], p), "auc": roc_auc_score(y[n:], p)}}
    json.dump(out, sys.stdout, indent=2)
    print()

if __name__ == "__main__":
    main()
