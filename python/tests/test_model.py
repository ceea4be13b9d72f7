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
