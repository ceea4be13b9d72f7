"""scikit-learn's ``SGDClassifier`` and ``SGDRegressor`` on the streamsgd kernel.

The parameters are scikit-learn's (``loss``, ``penalty``, ``alpha``, ``l1_ratio``,
``max_iter``, ``tol``, ``n_iter_no_change``, ``shuffle``, ``random_state``, ``learning_rate``,
``eta0``, ``power_t``, ``epsilon``, ``warm_start``, ``class_weight``, ``early_stopping``,
``validation_fraction``) with their defaults and meaning, so the
default model is scikit-learn's: plain SGD, one row per step, the same schedules. Beyond them:
``optimizer`` ("sgd", "adagrad", "normalized", "ftrl"), ``scale`` (None, "standard",
"minmax": the kernel's online feature stage), ``missing`` ("reject", "zero", "mean",
"drop": NaN cells), ``batch_size`` (rows per step) and ``bits`` (the table of a model learned
from scipy.sparse rows: column j is weight j). Multiclass targets are learned one-vs-rest, as
scikit-learn does.
"""

import math

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._streamsgd import Model

_LOSSES = ("log_loss", "hinge", "modified_huber", "squared_hinge", "perceptron", "squared_error", "huber", "epsilon_insensitive")
_CLASSIFIER_LOSSES = ("log_loss", "hinge", "modified_huber", "squared_hinge", "perceptron")


def _sklearn_optimal_eta0(loss, alpha, epsilon):
    """scikit-learn's initial step of the "optimal" schedule (Bottou's heuristic)."""
    typw = math.sqrt(1.0 / math.sqrt(alpha))
    dloss = {
        "log_loss": 1.0 / (1.0 + math.exp(-typw)),
        "hinge": 1.0,
        "modified_huber": 1.0,
        "squared_hinge": 1.0,
        "perceptron": 1.0,
        "squared_error": typw + 1.0,
        "huber": min(typw + 1.0, epsilon),
        "epsilon_insensitive": 1.0,
    }[loss]
    return typw / max(1.0, dloss)


class _SGD(BaseEstimator):
    """The parameters and the learning loop both estimators share."""

    def _penalties(self):
        alpha = float(self.alpha)
        if self.penalty in (None, "none"):
            return 0.0, 0.0
        if self.penalty == "l2":
            return 0.0, alpha
        if self.penalty == "l1":
            return alpha, 0.0
        if self.penalty == "elasticnet":
            return alpha * self.l1_ratio, alpha * (1.0 - self.l1_ratio)
        raise ValueError(f"penalty={self.penalty!r}: expected 'l2', 'l1', 'elasticnet' or None")

    def _new_model(self, n_features, sparse):
        if self.loss not in _LOSSES:
            raise ValueError(f"loss={self.loss!r}: expected one of {', '.join(_LOSSES)}")
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} must be >= 0")
        l1, l2 = self._penalties()
        kw = dict(optimizer=self.optimizer, l1=l1, l2=l2, delta=self.epsilon, epsilon=self.epsilon, skip_bad=False)
        if self.optimizer == "sgd":
            if self.learning_rate == "optimal":
                if self.alpha <= 0:
                    raise ValueError("alpha must be > 0 with learning_rate='optimal'")
                # The schedule's clock is the l2 strength: scikit-learn's is alpha whatever the penalty.
                kw.update(schedule="optimal", lr=_sklearn_optimal_eta0(self.loss, self.alpha, self.epsilon), l2=max(l2, 1e-12))
            elif self.learning_rate in ("constant", "invscaling"):
                if self.eta0 <= 0:
                    raise ValueError(f"eta0={self.eta0} must be > 0 with learning_rate={self.learning_rate!r}")
                kw.update(schedule=self.learning_rate, lr=float(self.eta0), power=float(self.power_t))
            else:
                raise ValueError(f"learning_rate={self.learning_rate!r}: expected 'optimal', 'constant' or 'invscaling'")
        elif self.eta0 > 0:
            kw.update(lr=float(self.eta0))
        if self.batch_size is not None:
            kw.update(batch=int(self.batch_size))
        if sparse:
            bits = self.bits if self.bits is not None else max(1, math.ceil(math.log2(max(n_features, 2))))
            if (1 << bits) < n_features:
                raise ValueError(f"bits={bits}: a table of {1 << bits} weights for {n_features} columns")
            return Model(self.loss, bits=bits, missing="zero" if self.missing == "mean" else self.missing, **kw)
        return Model(self.loss, features=n_features, scale=self.scale or "none", missing=self.missing, **kw)

    # Rows --------------------------------------------------------------------------------

    def _validate(self, X, y="no_validation", reset=True):
        nan = "allow-nan" if self.missing != "reject" else True
        kw = dict(accept_sparse="csr", dtype=[np.float32, np.float64], ensure_all_finite=nan, reset=reset)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        no_y = isinstance(y, str) and y == "no_validation"
        if not reset and self._plain(X, None if no_y else y):
            return X if no_y else (X, y)
        if no_y:
            return validate_data(self, X, **kw)
        return validate_data(self, X, y, **kw)

    def _plain(self, X, y):
        """True for a later batch that needs none of scikit-learn's conversions: a float
        ndarray of the fitted width (all finite, unless NaN is imputed) and a 1-D y of its
        rows. Anything else goes through ``validate_data`` and its messages."""
        ok = (
            type(X) is np.ndarray
            and X.ndim == 2
            and X.dtype in (np.float32, np.float64)
            and X.shape[0] > 0
            and X.shape[1] == getattr(self, "n_features_in_", -1)
            and not hasattr(self, "feature_names_in_")
        )
        if ok and y is not None:
            ok = type(y) is np.ndarray and y.ndim == 1 and y.shape[0] == X.shape[0] and y.dtype.kind in "biuf"
            ok = ok and (y.dtype.kind != "f" or bool(np.isfinite(y).all()))
        # A dense model learning the batch checks each value as it reads it and, at a NaN or
        # an infinity, raises with the model as it was (Model.learn(atomic=True)): no pass
        # over the batch here.
        if ok and self.missing == "reject" and not (y is not None and self._dense_models()):
            ok = bool(np.isfinite(X).all())
        return ok

    def _dense_models(self):
        models = getattr(self, "models_", None) or [getattr(self, "model_", None)]
        return all(m is not None and m.features is not None for m in models)

    def _validate_first(self, X, y):
        """``_validate(X, y, reset=True)`` for a first ``partial_fit``. A plain float ndarray
        with a 1-D numeric y of its rows skips scikit-learn's checks (a millisecond): its values
        are checked as the dense model learns them (``_forget`` undoes the call if one is bad)."""
        plain = (
            self.missing == "reject"
            and type(X) is np.ndarray
            and X.ndim == 2
            and X.dtype in (np.float32, np.float64)
            and X.shape[0] > 0
            and X.shape[1] > 0
            and type(y) is np.ndarray
            and y.ndim == 1
            and y.shape[0] == X.shape[0]
            and (y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.isfinite(y).all())))
        )
        if not plain:
            return self._validate(X, y, reset=True)
        self.n_features_in_ = X.shape[1]
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return X, y

    def _coefficients(self, model):
        """(coef, intercept) of one model in the rows' own units (the scaling folded in)."""
        w, b = model.coefficients(None if model.features is not None else self.n_features_in_)
        return w.astype(np.float64), float(b)

    def _forget(self):
        """Back to unfitted, after a first ``partial_fit`` that failed."""
        for name in ("models_", "model_", "classes_", "sparse_input_", "n_features_in_"):
            if hasattr(self, name):
                delattr(self, name)

    @staticmethod
    def _dense(X):
        return np.ascontiguousarray(X, dtype=np.float32)

    @staticmethod
    def _csr(X):
        X = sp.csr_matrix(X)
        X.sum_duplicates()
        return (
            np.ascontiguousarray(X.indptr, dtype=np.uint64),
            np.ascontiguousarray(X.indices, dtype=np.uint32),
            np.ascontiguousarray(X.data, dtype=np.float32),
        )

    @staticmethod
    def _learn(model, X, y, w):
        # A model first fitted on sparse rows is a sparse one (model.features is None).
        y = np.ascontiguousarray(y, dtype=np.float32)
        if model.features is None:
            model.learn_csr(*_SGD._csr(X), y, w)
        else:
            model.learn(_SGD._dense(X.toarray() if sp.issparse(X) else X), y, w, atomic=True)

    @staticmethod
    def _margins(model, X):
        if model.features is None:
            return model.predict_csr(*_SGD._csr(X), margins=True).astype(np.float64)
        return model.decision_function(_SGD._dense(X.toarray() if sp.issparse(X) else X)).astype(np.float64)

    def _epochs(self, X, y, sample_weight, models):
        """Passes over (X, y) until the progressive loss stops improving by ``tol`` for
        ``n_iter_no_change`` passes, or ``max_iter`` passes: scikit-learn's stopping rule. With
        ``early_stopping``, a stratified ``validation_fraction`` of the rows is held out and the
        passes stop when its ``score`` stops improving instead."""
        if self.early_stopping:
            extra = [] if sample_weight is None else [sample_weight]
            parts = train_test_split(
                X,
                y,
                *extra,
                test_size=self.validation_fraction,
                stratify=y if is_classifier(self) else None,
                random_state=self.random_state,
            )
            X, X_val, y, y_val = parts[:4]
            sample_weight, w_val = (parts[4], parts[5]) if extra else (None, None)
        targets = self._targets(y)
        weights = [None if w is None else np.ascontiguousarray(w, dtype=np.float32) for w in self._model_weights(targets, sample_weight, y)]
        n = X.shape[0]
        rng = np.random.RandomState(self.random_state) if self.shuffle else None
        best, stale = math.inf, 0
        self.n_iter_ = 0
        for _ in range(int(self.max_iter)):
            order = rng.permutation(n) if rng is not None else None
            Xe = X[order] if order is not None else X
            before = [m.stats() for m in models]
            for m, t, w in zip(models, targets, weights):
                self._learn(m, Xe, t[order] if order is not None else t, None if w is None else (w[order] if order is not None else w))
            self.n_iter_ += 1
            if self.early_stopping:
                # The held-out rows' score, to be raised (a loss: its negative).
                loss = -self.score(X_val, y_val, sample_weight=w_val)
            else:
                after = [m.stats() for m in models]
                loss = sum(_epoch_loss(b, a) for b, a in zip(before, after))
            if self.tol is not None and loss > best - self.tol:
                stale += 1
            else:
                stale = 0
            best = min(best, loss)
            if self.tol is not None and stale >= self.n_iter_no_change:
                break

    def _targets(self, y):
        """The models' targets (one model: y)."""
        return [y]

    def _model_weights(self, targets, sample_weight, y):
        """Each model's row weights (None: all 1)."""
        return [sample_weight] * len(targets)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = self.missing != "reject"
        return tags


def _epoch_loss(before, after):
    """The mean progressive loss of the rows learned between two ``Model.stats()``."""
    n0, n1 = before["rows_learned"], after["rows_learned"]
    if n1 <= n0:
        return 0.0
    return (after["progressive_loss"] * n1 - before["progressive_loss"] * n0) / (n1 - n0)


class SGDClassifier(ClassifierMixin, _SGD):
    """Linear classifiers (logistic regression, linear SVM) learned by SGD, with
    scikit-learn's API and parameters (see the module's docs); multiclass one-vs-rest."""

    def __init__(
        self,
        loss="hinge",
        *,
        penalty="l2",
        alpha=0.0001,
        l1_ratio=0.15,
        max_iter=1000,
        tol=1e-3,
        shuffle=True,
        random_state=None,
        learning_rate="optimal",
        eta0=0.0,
        power_t=0.5,
        epsilon=0.1,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        warm_start=False,
        optimizer="adagrad",
        scale="standard",
        missing="reject",
        batch_size=None,
        bits=None,
    ):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.epsilon = epsilon
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.optimizer = optimizer
        self.scale = scale
        self.missing = missing
        self.batch_size = batch_size
        self.bits = bits

    def _targets(self, y):
        """One 0/1 target per model: one for two classes, one per class beyond."""
        if len(self.classes_) == 2:
            return [(y == self.classes_[1]).astype(np.float32)]
        return [(y == c).astype(np.float32) for c in self.classes_]

    def _start(self, X, classes):
        self.classes_ = classes
        if len(classes) < 2:
            raise ValueError(f"The number of classes has to be greater than one; got {len(classes)} class")
        k = 1 if len(classes) == 2 else len(classes)
        self.models_ = [self._new_model(X.shape[1], sp.issparse(X)) for _ in range(k)]
        self.sparse_input_ = sp.issparse(X)

    def fit(self, X, y, sample_weight=None):
        """Learns (X, y) from scratch (or, with ``warm_start``, on from the last fit) in up to
        ``max_iter`` passes."""
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        classes = unique_labels(y)
        sample_weight = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        if not (self.warm_start and hasattr(self, "models_") and np.array_equal(classes, self.classes_)):
            self._start(X, classes)
        self._epochs(X, y, sample_weight, self.models_)
        return self

    def _model_weights(self, targets, sample_weight, y):
        """Each model's row weights: ``sample_weight`` times the class weight (two classes:
        the weight of each row's class; one-vs-rest: the model's class weight on its rows, 1 on
        the others, as scikit-learn weighs them); None where all are 1."""
        if self.class_weight is None:
            return [sample_weight] * len(targets)
        cw = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        sw = 1.0 if sample_weight is None else sample_weight
        if len(targets) == 1:
            return [np.where(targets[0] == 1, cw[1], cw[0]) * sw]
        return [np.where(t == 1, cw[i], 1.0) * sw for i, t in enumerate(targets)]

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Learns one pass over (X, y); the first call needs ``classes`` (all the labels)."""
        first = not hasattr(self, "models_")
        if not first:
            X, y = self._validate(X, y, reset=False)
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes={classes!r} is not the same as on the first call ({self.classes_!r})")
            return self._partial_fit(X, y, sample_weight)
        X, y = self._validate_first(X, y)
        if y.dtype.kind not in "biu":
            check_classification_targets(y)
        if classes is None:
            self._forget()
            raise ValueError("classes must be passed on the first call to partial_fit")
        # Integer classes need none of unique_labels' type checks.
        plain = np.asarray(classes)
        try:
            self._start(X, np.unique(plain) if plain.ndim == 1 and plain.dtype.kind in "biu" else unique_labels(classes))
            return self._partial_fit(X, y, sample_weight)
        except Exception:
            self._forget()
            raise

    def _partial_fit(self, X, y, sample_weight):
        # Each class's rows, and every row of some class: a compare per class instead of
        # scikit-learn's target checks (a millisecond a call).
        masks = [y == c for c in self.classes_]
        known = np.logical_or.reduce(masks)
        if not known.all():
            raise ValueError(f"labels {np.unique(y[~known])!r} are not in classes {self.classes_!r}")
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: compute the weights with "
                "sklearn.utils.class_weight.compute_class_weight('balanced', classes=classes, y=y) "
                "on a large enough sample of the labels and pass them as a dict"
            )
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        targets = masks[1:] if len(masks) == 2 else masks
        for m, t, tw in zip(self.models_, targets, self._model_weights(targets, w, y)):
            self._learn(m, X, t, None if tw is None else np.ascontiguousarray(tw, dtype=np.float32))
        return self

    @property
    def coef_(self):
        """Weights on the features as given, (1, n_features) for two classes, (n_classes,
        n_features) beyond: the online scaling folded in, so ``X @ coef_.T + intercept_`` is
        ``decision_function(X)`` (within the clip bounds)."""
        check_is_fitted(self, "models_")
        return np.vstack([self._coefficients(m)[0] for m in self.models_])

    @property
    def intercept_(self):
        """The intercepts, (1,) for two classes, (n_classes,) beyond."""
        check_is_fitted(self, "models_")
        return np.array([self._coefficients(m)[1] for m in self.models_])

    def decision_function(self, X):
        """Margins: (n,) for two classes (positive: ``classes_[1]``), (n, classes) beyond."""
        check_is_fitted(self, "models_")
        X = self._validate(X, reset=False)
        scores = np.column_stack([self._margins(m, X) for m in self.models_])
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        """The most likely class of each row."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def _has_proba(self):
        if self.loss not in ("log_loss", "modified_huber"):
            raise AttributeError(f"probability estimates are not available for loss={self.loss!r}")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Class probabilities (log loss: the logistic of the margins; modified Huber: the
        margins clipped to [-1, 1] and mapped to [0, 1]; beyond two classes, the one-vs-rest
        ones normalised, as scikit-learn does)."""
        scores = self.decision_function(X)
        if self.loss == "log_loss":
            p = 1.0 / (1.0 + np.exp(-scores))
        else:
            p = (np.clip(scores, -1.0, 1.0) + 1.0) / 2.0
        if p.ndim == 1:
            return np.column_stack([1.0 - p, p])
        total = p.sum(axis=1, keepdims=True)
        return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)

    @available_if(_has_proba)
    def predict_log_proba(self, X):
        """The log of ``predict_proba``."""
        return np.log(self.predict_proba(X))


class SGDRegressor(RegressorMixin, _SGD):
    """Linear regression (squared, Huber, epsilon-insensitive losses) learned by SGD, with
    scikit-learn's API and parameters (see the module's docs)."""

    def __init__(
        self,
        loss="squared_error",
        *,
        penalty="l2",
        alpha=0.0001,
        l1_ratio=0.15,
        max_iter=1000,
        tol=1e-3,
        shuffle=True,
        random_state=None,
        learning_rate="invscaling",
        eta0=0.01,
        power_t=0.25,
        epsilon=0.1,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        warm_start=False,
        optimizer="adagrad",
        scale="standard",
        missing="reject",
        batch_size=None,
        bits=None,
    ):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.epsilon = epsilon
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.optimizer = optimizer
        self.scale = scale
        self.missing = missing
        self.batch_size = batch_size
        self.bits = bits

    def _check_loss(self):
        if self.loss in _CLASSIFIER_LOSSES:
            raise ValueError(f"loss={self.loss!r} is a classifier's: SGDClassifier")

    def fit(self, X, y, sample_weight=None):
        """Learns (X, y) from scratch (or, with ``warm_start``, on from the last fit)."""
        self._check_loss()
        X, y = self._validate(X, y, reset=True)
        y = np.asarray(y, dtype=np.float64)
        sample_weight = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        if not (self.warm_start and hasattr(self, "model_")):
            self.model_ = self._new_model(X.shape[1], sp.issparse(X))
        self._epochs(X, y, sample_weight, [self.model_])
        return self

    def partial_fit(self, X, y, sample_weight=None):
        """Learns one pass over (X, y)."""
        self._check_loss()
        if hasattr(self, "model_"):
            X, y = self._validate(X, y, reset=False)
            return self._partial_fit(X, y, sample_weight)
        X, y = self._validate_first(X, y)
        try:
            self.model_ = self._new_model(X.shape[1], sp.issparse(X))
            return self._partial_fit(X, y, sample_weight)
        except Exception:
            self._forget()
            raise

    def _partial_fit(self, X, y, sample_weight):
        w = None if sample_weight is None else np.ascontiguousarray(_check_sample_weight(sample_weight, X), dtype=np.float32)
        self._learn(self.model_, X, np.asarray(y, dtype=np.float64), w)
        return self

    @property
    def coef_(self):
        """Weights on the features as given, (n_features,): the online scaling folded in, so
        ``X @ coef_ + intercept_`` is ``predict(X)`` (within the clip bounds)."""
        check_is_fitted(self, "model_")
        return self._coefficients(self.model_)[0]

    @property
    def intercept_(self):
        """The intercept, (1,)."""
        check_is_fitted(self, "model_")
        return np.array([self._coefficients(self.model_)[1]])

    def predict(self, X):
        """The predictions (w·x + b)."""
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self._margins(self.model_, X)
