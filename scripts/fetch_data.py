#!/usr/bin/env python3
"""Re-derive data/breast_cancer.csv and data/diabetes.csv from scikit-learn's wheel (PyPI)."""
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

if __name__ == "__main__":
    main(*sys.argv[1:])
