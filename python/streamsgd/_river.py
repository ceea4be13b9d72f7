"""River-style online models: ``learn_one(dict, y)`` and ``predict_one(dict)`` on rows of
named features, hashed into a table of 2^bits weights (a ``str`` value is a category,
``name=value``; a number is the feature's value) — the hashing ``streamsgd train
--categorical`` applies to a CSV's columns, so its models predict the same from dicts."""

from ._streamsgd import Model


class _OneAtATime:
    _loss = "log_loss"

    def __init__(self, bits=18, optimizer="normalized", lr=None, l1=0.0, l2=0.0, interactions=(), missing="reject"):
        self.model = Model(
            self._loss,
            bits=bits,
            optimizer=optimizer,
            lr=lr,
            l1=l1,
            l2=l2,
            interactions=list(interactions),
            missing=missing,
        )
        self._bind()

    def _bind(self):
        # Calls go straight to the model's method (a Python frame less per row), unless a
        # subclass has its own learn_one.
        if type(self).learn_one is _OneAtATime.learn_one:
            self.learn_one = self.model.learn_one

    def learn_one(self, x, y):
        """Learns one row ``x`` (a dict of name -> number or str) with target ``y``."""
        self.model.learn_one(x, float(y))

    def __getstate__(self):
        return {"model": self.model}

    def __setstate__(self, state):
        self.model = state["model"]
        self._bind()


class LogisticRegression(_OneAtATime):
    """Online logistic regression on dicts (River's ``linear_model.LogisticRegression``)."""

    _loss = "log_loss"

    def predict_proba_one(self, x):
        """``{False: 1 - p, True: p}`` for row ``x``."""
        p = float(self.model.predict_one(x))
        return {False: 1.0 - p, True: p}

    def predict_one(self, x):
        """The more likely class of row ``x``."""
        return self.model.predict_one(x) > 0.5


class LinearRegression(_OneAtATime):
    """Online linear regression (squared loss) on dicts (River's
    ``linear_model.LinearRegression``)."""

    _loss = "squared_error"

    def predict_one(self, x):
        """The prediction for row ``x``."""
        return float(self.model.predict_one(x))
