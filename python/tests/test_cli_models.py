"""A model trained by the command line predicts from Python exactly as `streamsgd predict`
prints: a dense one with mean imputation and standard scaling, a categorical CSV one."""

import numpy as np

from streamsgd import Model


def printed(out):
    return np.array([float(line) for line in out.splitlines()], dtype=np.float32)


def test_dense_model_with_its_feature_stage(cli, tmp_path):
    data, model = tmp_path / "r.csv", tmp_path / "r.model"
    cli("gen", "--task", "regression", "--rows", "3000", "--features", "4", "--missing-rate", "0.1", "-o", data)
    cli("train", data, "--loss", "squared", "--missing", "mean", "--scale", "standard", "--save", model)
    want = printed(cli("predict", "--model", model, data))
    raw = np.genfromtxt(data, delimiter=",", skip_header=1, dtype=np.float32)
    X = np.ascontiguousarray(raw[:, :4])
    assert np.isnan(X).sum() > 500
    m = Model.load(model)
    np.testing.assert_array_equal(m.predict(X), want)


def test_categorical_csv_model(cli, tmp_path):
    data, model = tmp_path / "t.csv", tmp_path / "t.model"
    lines = ["city,hour,y"]
    for i in range(2000):
        city = ("paris", "oslo", "rome", "lima")[i % 4]
        lines.append(f"{city},{i % 24},{int(city == 'oslo' or i % 24 > 20)}")
    data.write_text("\n".join(lines) + "\n")
    cli("train", data, "--categorical", "city", "--save", model)
    want = printed(cli("predict", "--model", model, data))
    m = Model.load(model)
    got = [m.predict_one({"city": c, "hour": float(h)}) for c, h, _ in (line.split(",") for line in lines[1:])]
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), want)
