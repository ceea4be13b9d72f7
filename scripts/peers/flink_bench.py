#!/usr/bin/env python3
"""Flink ML 2.3.0 OnlineLogisticRegression (FTRL) through PyFlink, on the same data as
bench.py; prints one JSON line {timing, rows, margin, note}. Run by bench.py --with-flink under
Python 3.8 (apache-flink-ml 2.3.0 supports 3.7-3.8).

On Java 17 the JVM needs --add-opens for the java.base packages Flink reflects into (set here
through JAVA_TOOL_OPTIONS). The Python wrapper has no set_initial_model_data, so the Java
object's setInitialModelData is called directly. Flink's model has no intercept.
"""
import json, os, sys, time

OPENS = ["java.lang", "java.util", "java.io", "java.nio", "java.net", "java.lang.reflect", "java.text",
         "java.util.concurrent", "java.util.concurrent.atomic", "java.time", "java.math", "sun.nio.ch"]
os.environ["JAVA_TOOL_OPTIONS"] = " ".join(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in OPENS)

import numpy as np  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import read_ssgd  # noqa: E402


def main(d):
    from pyflink.common import Row, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.ml.classification.logisticregression import OnlineLogisticRegression
    from pyflink.ml.linalg import DenseVectorTypeInfo, Vectors
    from pyflink.table import StreamTableEnvironment

    X, y = read_ssgd(os.path.join(d, "all.ssgd"))
    n = len(y)
    ntr = n - n // 10
    rows = min(ntr, int(os.environ.get("FLINK_ROWS", "100000")))
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    t_env = StreamTableEnvironment.create(env)
    data = [Row(Vectors.dense([float(v) for v in X[i]]), float(y[i])) for i in range(rows)]
    train = t_env.from_data_stream(env.from_collection(data, type_info=Types.ROW_NAMED(["features", "label"], [DenseVectorTypeInfo(), Types.DOUBLE()])))
    init = t_env.from_data_stream(env.from_collection([Row(Vectors.dense([0.0] * X.shape[1]), 0)],
                                                      type_info=Types.ROW_NAMED(["coefficient", "modelVersion"], [DenseVectorTypeInfo(), Types.LONG()])))
    olr = OnlineLogisticRegression().set_features_col("features").set_label_col("label").set_global_batch_size(1000)
    olr = olr.set_alpha(0.1).set_beta(1.0).set_reg(0.0).set_elastic_net(0.0)
    olr._java_obj.setInitialModelData(init._j_table)
    t0 = time.perf_counter()
    model = olr.fit(train)
    last = None
    with t_env.to_data_stream(model.get_model_data()[0]).execute_and_collect() as results:
        for r in results:
            last = r
    secs = time.perf_counter() - t0
    coef = np.array(last[0].to_array())
    margin = X[ntr:].astype(np.float64) @ coef
    note = f"first {rows} rows (Flink's speed); one run; timing includes Flink's job start; no intercept"
    print(json.dumps({"timing": {"median_s": secs, "min_s": secs, "max_s": secs}, "rows": rows, "margin": margin.tolist(), "note": note}))


if __name__ == "__main__":
    main(sys.argv[1])
