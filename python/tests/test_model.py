"""streamsgd.Model: dense numpy rows, CSR rows and dicts; its files are the CLI's; errors are
StreamsgdError (a ValueError), never a crash."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import streamsgd
from streamsgd import Model, StreamsgdError


def rows(n, d, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = np.arange(1, d + 1, dtype=np.float32) - d / 2
    y = (X @ w + rng.logistic(size=n) > 0).astype(np.float32)
    return X, y


def test_dense_learns_and_predicts():
    X, y = rows(20000, 8)
    m = Model("log_loss", features=8)
    m.learn(X[:18000], y[:18000])
    p = m.predict(X[18000:])
    assert p.dtype == np.float32 and p.shape == (2000,)
    assert ((p > 0.5) == (y[18000:] > 0.5)).mean() > 0.9
    margins = m.decision_function(X[18000:])
    np.testing.assert_allclose(1 / (1 + np.exp(-margins)), p, rtol=1e-5, atol=1e-6)
    s = m.stats()
    assert s["rows_learned"] == 18000 and 0 < s["progressive_loss"] < 0.4
    assert m.features == 8


def test_the_gil_is_released_while_learning():
    import threading

    X, y = rows(200000, 16)
    models = [Model("log_loss", features=16) for _ in range(2)]
    threads = [threading.Thread(target=m.learn, args=(X, y)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m.stats()["rows_learned"] == 200000 for m in models)


def test_csr_rows():
    X, y = rows(20000, 50)
    X[np.abs(X) < 1.0] = 0  # about two thirds zeros
    csr = sp.csr_matrix(X)
    m = Model("log_loss", bits=6)
    parts = (csr.indptr.astype(np.uint64), csr.indices.astype(np.uint32), csr.data.astype(np.float32))
    m.learn_csr(*parts, y)
    p = m.predict_csr(*parts)
    assert ((p > 0.5) == (y > 0.5)).mean() > 0.85
    assert m.features is None
    with pytest.raises(StreamsgdError, match="indptr"):
        m.learn_csr(np.array([0, 5], dtype=np.uint64), parts[1][:3], parts[2][:3], y[:1])
    with pytest.raises(StreamsgdError, match="a sparse model takes CSR rows"):
        m.learn(X, y)


def test_named_features_learn_one():
    m = Model("log_loss", bits=16)
    for i in range(3000):
        city = ("paris", "oslo", "rome")[i % 3]
        m.learn_one({"city": city, "hour": i % 24, "weekend": i % 7 > 4}, float(city == "oslo"))
    assert m.predict_one({"city": "oslo", "hour": 3}) > 0.8
    assert m.predict_one({"city": "rome", "hour": 3}) < 0.2
    with pytest.raises(StreamsgdError, match="NaN"):
        m.learn_one({"x": float("nan")}, 1.0)
    with pytest.raises(StreamsgdError, match="neither a number nor a str"):
        m.learn_one({"x": [1, 2]}, 1.0)
    with pytest.raises(StreamsgdError):
        m.learn_one({"x": 1.0}, 0.5)  # not a class label


def test_bad_rows_settings_and_files_are_errors(tmp_path):
    m = Model("log_loss", features=3)
    with pytest.raises(StreamsgdError, match="row 1"):
        m.learn(np.array([[1, np.nan, 3]], dtype=np.float32), np.array([1], dtype=np.float32))
    with pytest.raises(StreamsgdError, match="x has 4 columns: the model takes 3 features"):
        m.learn(np.ones((2, 4), dtype=np.float32), np.ones(2, dtype=np.float32))
    with pytest.raises(StreamsgdError, match="x has 6 columns"):
        m.predict(np.ones((2, 6), dtype=np.float32))
    with pytest.raises(StreamsgdError, match="labels"):
        m.learn(np.ones((2, 3), dtype=np.float32), np.ones(3, dtype=np.float32))
    with pytest.raises(StreamsgdError, match="C-contiguous"):
        m.learn(np.ones((3, 6), dtype=np.float32)[:, ::2], np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError):
        m.learn(np.ones((2, 3), dtype=np.float64), np.ones(2, dtype=np.float32))
    with pytest.raises(StreamsgdError, match="loss"):
        Model("cubic", features=3)
    with pytest.raises(StreamsgdError, match="features=D"):
        Model("log_loss")
    with pytest.raises(StreamsgdError, match="bits"):
        Model("log_loss", bits=99)
    with pytest.raises(StreamsgdError, match="learning rate"):
        Model("log_loss", features=2, lr=-1.0)
    with pytest.raises(StreamsgdError):
        Model.load(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(StreamsgdError, match="not a valid streamsgd model"):
        Model.load(tmp_path / "junk.model")
    with pytest.raises(StreamsgdError):
        Model.from_bytes(b"\x00" * 64)


def test_save_load_and_pickle(tmp_path):
    X, y = rows(5000, 4)
    m = Model("squared_error", features=4, missing="mean", batch=32)
    m.learn(X, X @ np.array([1, 2, 3, 4], dtype=np.float32))
    m.save(tmp_path / "m.model")
    loaded = Model.load(tmp_path / "m.model")
    np.testing.assert_array_equal(loaded.predict(X[:100]), m.predict(X[:100]))
    copy = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(copy.predict(X[:100]), m.predict(X[:100]))
    # Both go on learning as the original does.
    for model in (m, copy):
        model.learn(X[:64], y[:64])
    np.testing.assert_array_equal(copy.predict(X[:100]), m.predict(X[:100]))


def test_the_package_exports():
    assert {"Model", "SGDClassifier", "SGDRegressor", "LogisticRegression", "train_file"} <= set(streamsgd.__all__)
    assert issubclass(StreamsgdError, ValueError)


def test_dicts_of_any_layout_learn_the_same():
    """Keys seen again (the same str objects), equal keys built per row, keys in another order
    and numpy values (read through Python's conversions) all learn the same model."""
    names = ["a", "b", "colour"]
    rows = [{"a": (i % 7) / 7, "b": float(i % 5), "colour": ("red", "blue")[i % 2]} for i in range(3000)]
    ys = [float(r["colour"] == "red" or r["a"] > 0.7) for r in rows]

    def trained(rows):
        m = Model("log_loss", bits=12)
        for x, y in zip(rows, ys):
            m.learn_one(x, y)
        return m

    same_keys = trained(rows)
    fresh_keys = trained([{"".join(list(k)): v for k, v in r.items()} for r in rows])
    reordered = trained([dict(reversed(list(r.items()))) for r in rows])
    numpy_values = trained([{k: (np.float32(v) if k == "b" else v) for k, v in r.items()} for r in rows])
    mixed = trained([r if i % 3 else {k: r[k] for k in reversed(names)} for i, r in enumerate(rows)])
    want = same_keys.to_bytes()
    assert fresh_keys.to_bytes() == want
    assert numpy_values.to_bytes() == want
    # Reordered, the same features (summed in another order): the same predictions.
    probe = {"a": 0.5, "b": 2.0, "colour": "red"}
    for m in (reordered, mixed):
        assert abs(m.predict_one(probe) - same_keys.predict_one(probe)) < 1e-5
    assert same_keys.predict_one(probe) == same_keys.predict_one(dict(probe))


def test_dict_errors_name_the_feature():
    m = Model("log_loss", bits=10)
    with pytest.raises(StreamsgdError, match="feature inf_here: the value is infinite"):
        m.learn_one({"ok": 1.0, "inf_here": float("inf")}, 1.0)
    with pytest.raises(StreamsgdError, match="feature names are str"):
        m.learn_one({1: 1.0}, 1.0)
    with pytest.raises(StreamsgdError, match="feature y: .* neither a number nor a str"):
        m.predict_one({"x": 1.0, "y": object()})
    with pytest.raises(OverflowError):
        m.learn_one({"big": 10**400}, 1.0)
    assert m.stats()["rows_learned"] == 0
    with pytest.raises(StreamsgdError, match="a dense model"):
        Model("log_loss", features=2).learn_one({"a": 1.0}, 1.0)
