#!/usr/bin/python3
"""The Python module (python/mlq) against real processes: mlq-broker, an mlq-trainer,
the SQLite store and HDF5 files (docs/python.md). Usage: test_python.py BUILD_DIR SOURCE_DIR"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

build, source = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "python"))
import numpy as np  # noqa: E402
import h5py  # noqa: E402
import mlq  # noqa: E402

tmp = tempfile.mkdtemp(prefix="mlq-python-test-")
endpoint = "ipc://%s/broker.sock" % tmp
db = os.path.join(tmp, "mlq.db")
conf = os.path.join(tmp, "mlq.conf")
open(conf, "w").close()
os.environ.update(MLQ_CONFIG=conf, XDG_CONFIG_HOME=tmp, MLQ_BROKER=endpoint, MLQ_DB=db)
procs = []


def start(args, log):
    procs.append(subprocess.Popen(args, stdout=open(os.path.join(tmp, log), "w"),
                                  stderr=subprocess.STDOUT))


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        for p in procs:
            p.kill()
        for log in ("broker.log", "t1.log", "t2.log"):
            path = os.path.join(tmp, log)
            if os.path.exists(path):
                print("----", log)
                print(open(path).read()[-3000:])
        sys.exit(1)
    print("ok:", what)


try:
    start([build + "/broker/mlq-broker", "--db", db, "--bind", endpoint, "--heartbeat-ms", "100",
           "--liveness", "10"], "broker.log")
    for name in ("t1", "t2"):
        start([build + "/trainer/mlq-trainer", "--broker", endpoint, "--name", name,
               "--heartbeat-ms", "100", "--liveness", "10", "--threads", "1"], name + ".log")
    rng = np.random.default_rng(3)
    n, d, k = 300, 6, 3
    y = rng.integers(0, k, n).astype(np.int32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[np.arange(n), y] += 3
    train = os.path.join(tmp, "train.h5")
    with h5py.File(train, "w") as f:
        f["X"], f["y"] = x, y

    c = mlq.Client(timeout_ms=5000)
    spec = {"kind": "train", "dataset": {"path": train}, "model": {"layers": [d, 16, k]},
            "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 3, "batch_size": 16,
            "seed": 7, "threads": 1}
    for _ in range(50):  # the broker may still be starting
        try:
            run = c.submit(spec)
            break
        except mlq.Error as e:
            if e.code != "unreachable":
                raise
    job = c.wait(run, timeout=60)
    check(job["state"] == "succeeded", "submit a dict, wait: %s" % job["state"])

    long_spec = dict(spec, epochs=10000)
    other = c.submit(long_spec)
    time.sleep(0.3)
    check(c.cancel(other) in ("cancelling", "cancelled"), "cancel")
    check(c.wait(other, timeout=30)["state"] == "cancelled", "the cancelled job ends cancelled")

    try:
        c.submit({"kind": "train", "model": {"layers": [1]}})
        check(False, "a bad spec is refused")
    except mlq.Error as e:
        check(e.code == "bad_spec", "a bad spec is refused: %s" % e)

    dep = c.deploy(run, "py")
    check(dep["generation"] == 1 and dep["name"] == "py", "deploy")
    c.wait_ready("py")
    ans = c.infer("py", x[:10])
    check(ans.probabilities.shape == (10, k) and ans.classes.shape == (10,), "infer a numpy array")
    check(np.all(ans.classes == ans.probabilities.argmax(axis=1)), "classes are the arg max")
    check(np.allclose(ans.probabilities.sum(axis=1), 1, atol=1e-5), "probabilities sum to 1")
    check(ans.run == run and ans.generation == 1, "the answer names its model")
    one = c.infer("py", x[3])
    check(one.classes[0] == ans.classes[3], "one row, as a vector")
    check(np.allclose(one.probabilities[0], ans.probabilities[3], atol=1e-6),
          "one row agrees with the batch")

    for bad, code in ((np.full((1, d), np.nan), "bad_input"), (np.ones((2, d + 1)), "bad_request")):
        try:
            c.infer("py", bad)
            check(False, "refused: " + code)
        except mlq.Error as e:
            check(e.code == code, "%s: %s" % (code, e))
    try:
        c.infer("nope", x[:1])
        check(False, "unknown deployment")
    except mlq.Error as e:
        check(e.code == "not_found", "unknown deployment: %s" % e)

    lst = c.deployments()
    check(len(lst) == 1 and lst[0]["requests"] >= 2, "deployments")

    rows = mlq.runs()
    check(any(r["id"] == run and r["state"] == "succeeded" for r in rows), "runs() rows")
    r0 = [r for r in rows if r["id"] == run][0]
    check("train_loss" in r0 and isinstance(r0["train_loss"], float), "final metrics as columns")
    check(all(isinstance(v, (int, float, str, type(None))) for r in rows for v in r.values()),
          "plain values, as a DataFrame takes them")
    ms = mlq.metrics(run, key="train_loss")
    check(len(ms) == 3 and [m["epoch"] for m in ms] == [1, 2, 3], "metrics rows")
    check(mlq.deployments_table()[0]["name"] == "py", "the deployments table")
    try:
        import pandas as pd  # not a dependency: checked where it is installed
        check(len(pd.DataFrame(rows)) == len(rows), "pandas.DataFrame(runs())")
    except ImportError:
        pass
    c.undeploy("py")
    check(c.deployments() == [], "undeploy")
    c.close()
    print("python module: all checks passed")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
