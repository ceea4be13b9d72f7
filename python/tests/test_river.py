"""River-style models: learn_one / predict_one on dicts."""

import pickle

import numpy as np

from streamsgd import LinearRegression, LogisticRegression


def test_logistic_regression_one_at_a_time():
    m = LogisticRegression(bits=16)
    for i in range(4000):
        x = {"colour": ("red", "green", "blue")[i % 3], "size": (i % 10) / 10}
        m.learn_one(x, x["colour"] == "red")
    p = m.predict_proba_one({"colour": "red", "size": 0.5})
    assert set(p) == {False, True} and abs(sum(p.values()) - 1) < 1e-6 and p[True] > 0.8
    assert m.predict_one({"colour": "blue", "size": 0.5}) is False or not m.predict_one({"colour": "blue", "size": 0.5})
    again = pickle.loads(pickle.dumps(m))
    assert again.predict_proba_one({"colour": "red", "size": 0.5}) == p


def test_linear_regression_one_at_a_time():
    m = LinearRegression(bits=12)
    for i in range(20000):
        x = {"a": (i % 7) / 7, "b": (i % 5) / 5}
        m.learn_one(x, 3 * x["a"] - 2 * x["b"] + 1)
    assert abs(m.predict_one({"a": 0.5, "b": 0.5}) - 1.5) < 0.1


def test_learn_one_takes_bools_and_numbers_and_a_subclass_keeps_its_own():
    m = LogisticRegression(bits=10)
    assert m.learn_one({"a": 1.0}, True) is None
    m.learn_one({"a": -1.0}, 0)
    m.learn_one({"a": 1.0}, np.bool_(True))
    assert pickle.loads(pickle.dumps(m)).learn_one({"a": 1.0}, 1.0) is None
    assert m.model.stats()["rows_learned"] == 3

    class Counting(LogisticRegression):
        seen = 0

        def learn_one(self, x, y):
            self.seen += 1
            super().learn_one(x, y)

    c = Counting(bits=10)
    c.learn_one({"a": 1.0}, True)
    assert c.seen == 1 and c.model.stats()["rows_learned"] == 1
