"""streamsgd.train_file: the sharded pipeline on .ssgd files, its report as a dict."""

import numpy as np
import pytest

import streamsgd
from streamsgd import Model, StreamsgdError


def test_dense_file_with_holdout_and_progress(cli, tmp_path):
    data = tmp_path / "c.ssgd"
    cli("gen", "--rows", "200000", "--features", "8", "-o", data)
    seen = []
    report = streamsgd.train_file(data, threads=2, holdout=0.1, progress=lambda done, total: seen.append((done, total)), save=tmp_path / "m.model")
    assert report["rows_learned"] == 180000 and report["threads"] == 2
    assert report["holdout"]["accuracy"] > 0.7
    assert seen[-1] == (180000, 180000) and all(d <= t for d, t in seen)
    model = report["model"]
    assert model.features == 8
    again = Model.load(tmp_path / "m.model")
    X = np.random.RandomState(0).normal(size=(10, 8)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(X), again.predict(X))


def test_sparse_file(cli, tmp_path):
    vw, data = tmp_path / "c.vw", tmp_path / "c.ssgd"
    cli("gen", "--task", "ctr", "--rows", "50000", "-o", vw)
    cli("convert", vw, "-o", data)
    report = streamsgd.train_file(data, bits=16, interactions=["cd"], threads=1, holdout=0.2, progress=False)
    assert report["rows_learned"] == 40000
    assert report["model"].features is None


def test_errors(cli, tmp_path):
    with pytest.raises(StreamsgdError):
        streamsgd.train_file(tmp_path / "missing.ssgd")
    data = tmp_path / "c.ssgd"
    cli("gen", "--rows", "1000", "--features", "3", "-o", data)
    with pytest.raises(StreamsgdError, match="holdout"):
        streamsgd.train_file(data, holdout=1.5, progress=False)

    def boom(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        streamsgd.train_file(data, progress=boom)
