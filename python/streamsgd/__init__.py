"""streamsgd: online linear models (logistic regression, linear SVM, linear and robust
regression) learned by a Rust kernel at tens of millions of rows per second.

- ``Model``: the kernel's model — dense rows (numpy, through a feature stage that imputes and
  scales online), scipy.sparse CSR rows, or dicts of named features hashed like VW/River.
- ``SGDClassifier`` / ``SGDRegressor``: scikit-learn's estimators (needs scikit-learn).
- ``LogisticRegression`` / ``LinearRegression``: River-style ``learn_one`` / ``predict_one``.
- ``train_file``: the sharded pipeline on a ``.ssgd`` file, returning its report.
"""

import json as _json
import sys as _sys

from . import _streamsgd
from ._streamsgd import Model, StreamsgdError
from ._river import LinearRegression, LogisticRegression

__all__ = [
    "Model",
    "StreamsgdError",
    "train_file",
    "SGDClassifier",
    "SGDRegressor",
    "LogisticRegression",
    "LinearRegression",
]


def train_file(path, loss="log_loss", *, threads=None, holdout=0.0, progress=True, save=None, **settings):
    """Learns the ``.ssgd`` file at ``path`` with the sharded pipeline (``threads`` shards,
    default one per core; the last ``holdout`` share of its rows held out and evaluated) and
    returns the run's report as a dict, the learned ``Model`` under ``"model"``.

    ``settings`` are ``Model``'s (``optimizer``, ``lr``, ``scale``, ``missing``, ``bits``,
    ``interactions``, ...); a dense file's width is read from the file. ``progress``: True for
    a progress line on stderr, a callable ``(rows_done, rows_total)``, or False. ``save``: also
    write the model file there (``streamsgd predict`` reads it).
    """
    path = str(path)
    features = _streamsgd.file_features(path)
    if features is not None:
        template = Model(loss, features=features, **settings)
    else:
        template = Model(loss, bits=settings.pop("bits", 18), **settings)
    callback = _ProgressLine() if progress is True else (progress or None)
    model, report = _streamsgd.run_file(path, template, threads=threads, holdout=holdout, progress=callback)
    if isinstance(callback, _ProgressLine):
        callback.close()
    report = _json.loads(report)
    if save is not None:
        model.save(save)
    report["model"] = model
    return report


class _ProgressLine:
    """``rows  12.3M / 20.0M  61%`` on stderr, rewritten in place."""

    def __init__(self):
        self.shown = False

    def __call__(self, done, total):
        pct = 100.0 * done / total if total else 100.0
        _sys.stderr.write(f"\rrows {done / 1e6:8.2f}M / {total / 1e6:.2f}M  {pct:5.1f}%")
        _sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.shown:
            _sys.stderr.write("\n")


def __getattr__(name):
    # The scikit-learn estimators import scikit-learn: only when asked for.
    if name in ("SGDClassifier", "SGDRegressor"):
        from . import _sklearn

        return getattr(_sklearn, name)
    raise AttributeError(f"module 'streamsgd' has no attribute {name!r}")
