#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Each seed is the target's input: valid files and messages of every kind mlq
reads, plus near-misses (one field wrong). The outputs are committed; run this
again only to change them (Debian's python3-h5py and python3-numpy, which
scripts/install-deps.sh --test installs).
Usage: tests/fuzz/make-seeds.py
"""
import json
import os
import struct
import zlib

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_spec: the JSON text ----
def specs():
    for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if name.endswith(".json"):
            with open(os.path.join(ROOT, "examples", name), "rb") as f:
                put("fuzz_spec", name, f.read())
    train = {"kind": "train", "dataset": {"path": "d.h5", "x": "X", "y": "y", "scale": False},
             "validation_split": 0.2,
             "model": {"layers": [4, 8, 3], "activation": "leaky_relu", "leaky_slope": 0.1,
                       "output": "softmax"},
             "loss": "cross_entropy",
             "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
             "regularization": {"l1": 0.001, "l2": 0.01}, "batch_size": 8, "epochs": 2,
             "seed": 7, "threads": 1, "checkpoint_every": 1, "shuffle": False,
             "memory_budget_mb": 64, "priority": 5, "max_attempts": 2}
    seeds = {
        "train-sgd.json": train,
        "train-mse.json": {"dataset": {"path": "r.h5"}, "model": {"layers": [3, 1],
                           "output": "linear"}, "loss": "mse",
                           "optimizer": {"name": "rmsprop", "lr": 0.01, "alpha": 0.9,
                                         "centered": True}},
        "train-adagrad.json": {"dataset": {"path": "d.h5"}, "model": {"layers": [2, 2]},
                               "optimizer": {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01,
                                             "initial_accumulator_value": 0.1}},
        "train-adamw.json": {"dataset": {"path": "d.h5"}, "validation": {"path": "v.h5"},
                             "model": {"layers": [2, 4, 2], "activation": "tanh"},
                             "optimizer": {"name": "adamw", "lr": 0.001, "betas": [0.8, 0.99],
                                           "eps": 1e-7, "amsgrad": True,
                                           "weight_decay": 0.01}},
        "eval.json": {"kind": "eval", "run": 3, "checkpoint": "best",
                      "dataset": {"path": "t.h5"}},
        "predict.json": {"kind": "predict", "run": 1, "checkpoint": 4,
                         "input": {"path": "n.h5", "x": "X"}, "output": "p.h5"},
        "train-typed-cnn.json": {
            "dataset": {"path": "f.h5"},
            "model": {"input": [1, 28, 28], "layers": [
                {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, {"type": "batchnorm"},
                {"type": "relu"}, {"type": "maxpool", "kernel": 2},
                {"type": "residual", "layers": [
                    {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1},
                    {"type": "batchnorm", "momentum": 0.2}, {"type": "gelu"}]},
                {"type": "avgpool", "kernel": 2, "stride": 2}, {"type": "flatten"},
                {"type": "dense", "out": 32}, {"type": "leaky_relu", "negative_slope": 0.1},
                {"type": "dropout", "p": 0.25}, {"type": "dense", "out": 10}]},
            "optimizer": {"name": "adam", "lr": 0.001}},
        "train-typed-shortcut.json": {
            "dataset": {"path": "f.h5"},
            "model": {"input": [3, 8, 8], "layers": [
                {"type": "residual", "layers": [
                    {"type": "conv2d", "out": 4, "kernel": 3, "stride": 2, "padding": 1,
                     "bias": False}],
                 "shortcut": [{"type": "conv2d", "out": 4, "kernel": 1, "stride": 2},
                              {"type": "batchnorm"}]},
                {"type": "global_avgpool"}, {"type": "flatten"}, {"type": "dense", "out": 2}]}},
        "train-cosine.json": {"dataset": {"path": "d.h5"}, "optimizer": {
            "name": "adam", "lr": 0.001, "schedule": {"type": "cosine", "t_max": 12,
                                                      "eta_min": 1e-5, "interval": "step"}}},
        "train-warmup-cosine.json": {"dataset": {"path": "d.h5"}, "optimizer": {
            "name": "sgd", "lr": 0.1, "schedule": {
                "type": "sequential", "milestones": [5], "schedules": [
                    {"type": "linear", "start_factor": 0.1, "total_iters": 5},
                    {"type": "multistep", "milestones": [10, 20], "gamma": 0.5}]}}},
        "train-plateau-early-stop.json": {
            "dataset": {"path": "d.h5"}, "validation_split": 0.1,
            "optimizer": {"name": "adam", "schedule": {
                "type": "reduce_on_plateau", "metric": "val_accuracy", "mode": "max",
                "factor": 0.5, "patience": 2, "threshold": 0.01, "threshold_mode": "abs",
                "cooldown": 1, "min_lr": 1e-6, "eps": 1e-9}},
            "early_stopping": {"metric": "val_loss", "mode": "min", "patience": 3,
                               "min_delta": 0.001}},
        # near-misses
        "miss-schedule-field.json": {"dataset": {"path": "d.h5"}, "optimizer": {
            "name": "adam", "schedule": {"type": "step", "step_size": 0}}},
        "miss-typed-field.json": {"dataset": {"path": "f.h5"}, "model": {
            "input": [4], "layers": [{"type": "dense", "out": 3, "kernel": 2}]}},
        "miss-typed-shape.json": {"dataset": {"path": "f.h5"}, "model": {
            "input": [1, 2, 2], "layers": [{"type": "conv2d", "out": 3, "kernel": 5},
                                           {"type": "flatten"}, {"type": "dense", "out": 2}]}},
        "miss-unknown-key.json": {"dataset": {"path": "d.h5"}, "epoch": 3},
        "miss-zero-width.json": {"dataset": {"path": "d.h5"}, "model": {"layers": [4, 0, 2]}},
        "miss-budget.json": {"dataset": {"path": "d.h5"}, "memory_budget_mb": 1 << 41},
        "miss-eval-no-run.json": {"kind": "eval", "dataset": {"path": "t.h5"}},
    }
    for name, doc in seeds.items():
        put("fuzz_spec", name, json.dumps(doc).encode())
    put("fuzz_spec", "miss-duplicate.json", b'{"epochs": 1, "epochs": 2, "dataset": {"path": "a"}}')
    put("fuzz_spec", "miss-truncated.json", json.dumps(train).encode()[:-9])


# ---- fuzz_proto: flag byte (1 = as a ROUTER reads), frames joined by "\0|" ----
SEP = b"\0|"


def msg(router, *frames):
    return bytes([1 if router else 0]) + SEP.join(frames)


def proto():
    ident = b"\x00\x6b\x8b\x45\x67"
    hello = {"name": "t1", "host": "h1", "instance": "h1:4242:1700000000", "version": "0.1.0",
             "capabilities": {"kinds": ["train", "eval", "predict"], "threads": 2,
                              "blas": "openblas"}}
    spec = {"kind": "train", "dataset": {"path": "d.h5"}, "model": {"layers": [4, 3]}}
    j = lambda o: json.dumps(o, separators=(",", ":")).encode()
    seeds = {
        "hello": msg(1, ident, b"MLQ1", b"HELLO", j(hello)),
        "hello-job": msg(1, ident, b"MLQ1", b"HELLO", j(dict(hello, job=12))),
        "submit": msg(1, ident, b"MLQ1", b"SUBMIT", j({"spec": spec, "request_id": "r-1"})),
        "status": msg(1, ident, b"MLQ1", b"STATUS", j({"id": 3, "since_epoch": 2})),
        "cancel": msg(1, ident, b"MLQ1", b"CANCEL", j({"id": 3})),
        "queue": msg(1, ident, b"MLQ1", b"QUEUE", b"{}"),
        "heartbeat": msg(1, ident, b"MLQ1", b"HEARTBEAT", j({"job": 0})),
        "metrics": msg(1, ident, b"MLQ1", b"METRICS",
                       j({"job": 5, "epoch": 1, "step": 10,
                          "values": {"train_loss": 0.5, "val_accuracy": 0.9}})),
        "checkpoint": msg(1, ident, b"MLQ1", b"CHECKPOINT", j({"job": 5, "epoch": 1, "step": 10}),
                          b"MLQCKPT\0\x01\0\0\0"),
        "done": msg(1, ident, b"MLQ1", b"DONE",
                    j({"job": 5, "state": "succeeded", "result": {"accuracy": 0.9}})),
        "ok": msg(0, b"MLQ1", b"OK", j({"id": 7, "existed": True})),
        "error": msg(0, b"MLQ1", b"ERROR", j({"error": "no such job", "code": "not_found"})),
        "welcome": msg(0, b"MLQ1", b"WELCOME", j({"heartbeat_ms": 1000, "liveness": 3,
                                                 "adopt": 5})),
        "job": msg(0, b"MLQ1", b"JOB", j({"job": 5, "attempt": 2, "spec": spec}), b"\x01\x02"),
        "ack": msg(0, b"MLQ1", b"ACK", j({"job": 5})),
        "drop": msg(0, b"MLQ1", b"DROP", j({"job": 5, "reason": "requeued"})),
        "who": msg(0, b"MLQ1", b"WHO", b"{}"),
        # near-misses
        "miss-version": msg(1, ident, b"MLQ2", b"HELLO", j(hello)),
        "miss-lowercase": msg(0, b"MLQ1", b"hello", b"{}"),
        "miss-unknown": msg(0, b"MLQ1", b"RESTART", b"{}"),
        "miss-array": msg(0, b"MLQ1", b"OK", b"[1,2]"),
        "miss-json": msg(0, b"MLQ1", b"OK", b'{"id": 1,'),
        "miss-frames": msg(1, ident, b"MLQ1", b"DONE", b"{}", b"x", b"y"),
        "miss-empty-ident": msg(1, b"", b"MLQ1", b"QUEUE", b"{}"),
    }
    for name, data in seeds.items():
        put("fuzz_proto", name, data)


# ---- fuzz_checkpoint: flag byte (1 = fix the CRC), then the blob ----
# These are version 1, built here. The version 2 seeds (v2-*: tensor table, state arena)
# are a zero byte and the last checkpoint of a real run, left as they are:
#   mlq-trainer --standalone SPEC --db r.db
#   sqlite3 r.db "select writefile('ck', blob) from checkpoints order by id desc limit 1"
# with a dense [4, 3, 3] Adam run and a typed dense, batchnorm, relu, residual, dropout,
# dense SGD run on corpus/fuzz_dataset/float32-classes.
def checkpoint_blob(spec, params, optim, version=1, extra=b""):
    s = json.dumps(spec, separators=(",", ":")).encode()
    fixed = struct.pack("<QQQ", 3, 30, 0) + struct.pack("<4Q", 1, 2, 3, 4) + \
        struct.pack("<Qd", 30, 0.25) + struct.pack("<QQ", len(params), len(optim)) + extra
    header = struct.pack("<I", len(s)) + s + fixed
    body = struct.pack("<%df" % len(params), *params) + struct.pack("<%df" % len(optim), *optim)
    blob = b"MLQCKPT\0" + struct.pack("<II", version, len(header)) + header + body
    return blob + struct.pack("<I", zlib.crc32(blob) & 0xFFFFFFFF)


def checkpoints():
    spec = {"kind": "train", "dataset": {"path": "d.h5"}, "model": {"layers": [2, 3, 2]},
            "optimizer": {"name": "adam", "lr": 0.01}}
    n = (2 + 1) * 3 + (3 + 1) * 2
    params = [0.01 * i for i in range(n)]
    optim = [0.001 * i for i in range(2 * n)]
    good = checkpoint_blob(spec, params, optim)
    put("fuzz_checkpoint", "adam", b"\0" + good)
    sgd = dict(spec, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    put("fuzz_checkpoint", "sgd", b"\0" + checkpoint_blob(sgd, params, params))
    put("fuzz_checkpoint", "gd-no-optim", b"\0" + checkpoint_blob(
        dict(spec, optimizer={"name": "gd", "lr": 0.1}), params, []))
    metrics = struct.pack("<4d", 0.5, 0.75, 0.625, 0.8)
    put("fuzz_checkpoint", "with-metrics", b"\0" + checkpoint_blob(spec, params, optim,
                                                                   extra=metrics))
    put("fuzz_checkpoint", "later-header-field", b"\0" + checkpoint_blob(
        spec, params, optim, extra=metrics + b"\x07" * 8))
    # version 2 with no tensor table and the schedule's state after it
    v2 = metrics + struct.pack("<QI", 0, 0) + struct.pack("<I", 72) + \
        struct.pack("<dqqdqqdqq", 0.005, 4, 2, 0.3, 1, 0, 0.3, 1, 3)
    put("fuzz_checkpoint", "with-run-state", b"\0" + checkpoint_blob(
        dict(spec, optimizer={"name": "adam", "lr": 0.01, "schedule": {
            "type": "step", "step_size": 2}}), params, optim, version=2, extra=v2))
    # near-misses: flag 1 rewrites the CRC, so the checks behind it are reached
    put("fuzz_checkpoint", "miss-crc", b"\0" + good[:40] + b"X" + good[41:])
    put("fuzz_checkpoint", "miss-truncated", b"\1" + good[:-20] + good[-4:])
    put("fuzz_checkpoint", "miss-version", b"\1" + checkpoint_blob(spec, params, optim, version=3))
    put("fuzz_checkpoint", "miss-sizes", b"\1" + good[:-8 - 4 * len(optim) - 4 * n] +
        struct.pack("<QQ", n + 1, 2 * n) + good[-4 - 4 * len(optim) - 4 * n:])


# ---- fuzz_dataset: flag byte (1 need y, 2 streamed, 4 shuffle, 8 scale), the file ----
def h5(flags, name, build):
    path = os.path.join(CORPUS, ".tmp.h5")
    with h5py.File(path, "w") as f:
        build(f)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    put("fuzz_dataset", name, bytes([flags]) + data)


def datasets():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    h5(0x01, "float32-classes", lambda f: (f.create_dataset("X", data=x),
                                           f.create_dataset("y", data=y)))
    h5(0x07, "float32-classes-streamed", lambda f: (f.create_dataset("X", data=x),
                                                    f.create_dataset("y", data=y)))
    img = rng.integers(0, 256, (5, 2, 3), dtype=np.uint8)
    h5(0x09, "uint8-images-gzip", lambda f: (
        f.create_dataset("X", data=img, chunks=(2, 2, 3), compression="gzip"),
        f.create_dataset("y", data=np.arange(5, dtype=np.uint8), chunks=(2,),
                         compression="gzip")))
    h5(0x03, "float64-targets-shuffle-filter", lambda f: (
        f.create_dataset("X", data=x.astype(np.float64), chunks=(3, 4), shuffle=True,
                         compression="gzip"),
        f.create_dataset("y", data=rng.standard_normal((6, 2)).astype(np.float32))))
    h5(0x00, "predict-no-y", lambda f: f.create_dataset("X", data=x))
    h5(0x01, "y-n-by-1", lambda f: (f.create_dataset("X", data=x),
                                    f.create_dataset("y", data=y.reshape(6, 1).astype(np.int64))))
    # near-misses
    bad = x.copy()
    bad[2, 1] = np.nan
    h5(0x01, "miss-nan", lambda f: (f.create_dataset("X", data=bad),
                                    f.create_dataset("y", data=y)))
    h5(0x01, "miss-negative-class", lambda f: (f.create_dataset("X", data=x),
                                               f.create_dataset("y", data=y - 1)))
    h5(0x01, "miss-lengths", lambda f: (f.create_dataset("X", data=x),
                                        f.create_dataset("y", data=y[:5])))
    h5(0x01, "miss-int16-x", lambda f: (f.create_dataset("X", data=x.astype(np.int16)),
                                        f.create_dataset("y", data=y)))
    h5(0x01, "miss-group", lambda f: (f.create_group("X"), f.create_dataset("y", data=y)))


# ---- fuzz_import_csv: flag byte (1 header, 2 regression, 5 label by name), the file ----
def csvs():
    seeds = {
        "classes": (0x00, b"0.5,1.5,0\n2,3.25,1\n-1e3,4,2\n"),
        "header-by-name": (0x05, b"a,label,b\n1,0,2\n3,1,4\n\n5,1,6\r\n"),
        "header-first-column": (0x09, b"label,a,b\n1,0.5,2\n0,3,4\n"),
        "regression": (0x02, b"1,2,0.75\n3, 4 ,-1.5\n"),
        # near-misses
        "miss-not-number": (0x00, b"1,2,0\n3,x,1\n"),
        "miss-ragged": (0x00, b"1,2,0\n3,1\n"),
        "miss-inf": (0x00, b"1,inf,0\n"),
        "miss-negative-label": (0x00, b"1,2,-1\n"),
        "miss-one-column": (0x00, b"1\n2\n"),
        "miss-no-rows": (0x01, b"a,b\n"),
    }
    for name, (flags, text) in seeds.items():
        put("fuzz_import_csv", name, bytes([flags]) + text)


# ---- fuzz_import_idx: flag byte (1 gzip, 2 cut the gzip), cut byte, the IDX bytes ----
def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def idxs():
    images = idx([2, 2, 3], bytes(range(12)))
    labels = idx([4], bytes([3, 1, 4, 1]))
    put("fuzz_import_idx", "images", b"\0\0" + images)
    put("fuzz_import_idx", "labels", b"\0\0" + labels)
    put("fuzz_import_idx", "images-gzip", b"\1\0" + images)
    put("fuzz_import_idx", "rgb", b"\0\0" + idx([1, 2, 2, 3], bytes(range(12))))
    # near-misses
    put("fuzz_import_idx", "miss-truncated", b"\0\0" + images[:-3])
    put("fuzz_import_idx", "miss-extra", b"\0\0" + images + b"\0")
    put("fuzz_import_idx", "miss-float32", b"\0\0" + bytes([0, 0, 0x0D, 1]) +
        struct.pack(">I", 1) + b"\0\0\0\0")
    put("fuzz_import_idx", "miss-gzip-cut", b"\3\5" + images)
    put("fuzz_import_idx", "miss-huge", b"\0\0" + idx([8, 65536, 65536], b""))


if __name__ == "__main__":
    specs()
    proto()
    checkpoints()
    datasets()
    csvs()
    idxs()
