#!/usr/bin/python3
"""Checks an exported model without mlq: computes the network with numpy from
model.h5 (mlq export) on the inputs of input.h5 and compares with what mlq
predicted (predictions.h5 from mlq predict).

usage: export_check.py MODEL.h5 INPUT.h5 PREDICTIONS.h5
Exit status 0 when they agree, 1 when not, 77 when h5py or numpy is missing
(ctest counts 77 as skipped)."""
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    print("export_check: h5py or numpy not installed; skipping")
    sys.exit(77)


def act(name, z):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    raise SystemExit("unknown activation " + name)


def attr_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main(model_path, input_path, pred_path):
    with h5py.File(model_path, "r") as m:
        activation = attr_str(m.attrs["activation"])
        sizes = list(m.attrs["layers"])
        layers = [(np.asarray(m["layers/%d/weight" % k], np.float64),
                   np.asarray(m["layers/%d/bias" % k], np.float64))
                  for k in range(len(sizes) - 1)]
    with h5py.File(input_path, "r") as f:
        x = np.asarray(f["X"])
        if x.dtype == np.uint8:
            x = x / 255.0
        x = x.reshape(len(x), -1).astype(np.float64)
    for k, (w, b) in enumerate(layers):
        assert w.shape == (sizes[k + 1], sizes[k]), (k, w.shape)
        x = x @ w.T + b
        if k + 1 < len(layers):
            x = act(activation, x)
    z = x - x.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    with h5py.File(pred_path, "r") as p:
        mlq_pred = np.asarray(p["predictions"])
        mlq_probs = np.asarray(p["probabilities"], np.float64)
    numpy_pred = probs.argmax(axis=1)
    agree = float((numpy_pred == mlq_pred).mean())
    worst = float(np.abs(probs - mlq_probs).max())
    print("export_check: %d rows, predictions agree on %.4f, largest probability difference %.2e"
          % (len(x), agree, worst))
    # float32 against float64: ties aside, every class must agree.
    ok = worst < 1e-4 and agree >= 0.999
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
