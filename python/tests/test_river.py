"""River-style models: learn_one / predict_one on dicts."""

import pickle

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
