#!/usr/bin/python3
"""Loads a model exported by mlq export into PyTorch 1.13: builds the
nn.Sequential that its architecture attribute describes, loads state_dict/
with load_state_dict(strict=True) (so every name and shape must be
PyTorch's), runs it in eval mode on the inputs of INPUT.h5 and compares with
what mlq predicted (PREDICTIONS.h5 from mlq predict).

usage: export_torch.py MODEL.h5 INPUT.h5 PREDICTIONS.h5
Exit status 0 when they agree, 1 when not, 77 when torch, h5py or numpy is
missing (ctest counts 77 as skipped)."""
import json
import sys

try:
    import h5py
    import numpy as np
    import torch
    from torch import nn
except ImportError:
    print("export_torch: torch, h5py or numpy not installed; skipping")
    sys.exit(77)


class Residual(nn.Module):
    """mlq's residual block: branch(x) + shortcut(x)."""

    def __init__(self, branch, shortcut):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


ACTS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def build(layers, prefix, sd, rank):
    """nn.Sequential of typed layers; rank is 3 for (C, H, W), 1 for (F)."""
    mods = []
    for i, l in enumerate(layers):
        t, name = l["type"], "%s%d" % (prefix, i)
        w = sd.get(name + ".weight")
        if t == "dense":
            mods.append(nn.Linear(w.shape[1], w.shape[0], bias=l.get("bias", True)))
        elif t == "conv2d":
            mods.append(nn.Conv2d(w.shape[1], w.shape[0], l["kernel"], stride=l.get("stride", 1),
                                  padding=l.get("padding", 0), bias=l.get("bias", True)))
        elif t in ("maxpool", "avgpool"):
            cls = nn.MaxPool2d if t == "maxpool" else nn.AvgPool2d
            mods.append(cls(l["kernel"], stride=l.get("stride", l["kernel"]),
                            padding=l.get("padding", 0)))
        elif t == "global_avgpool":
            mods.append(nn.AdaptiveAvgPool2d(1))
        elif t == "flatten":
            mods.append(nn.Flatten())
            rank = 1
        elif t == "batchnorm":
            cls = nn.BatchNorm2d if rank == 3 else nn.BatchNorm1d
            mods.append(cls(w.shape[0], eps=l.get("eps", 1e-5), momentum=l.get("momentum", 0.1)))
        elif t == "dropout":
            mods.append(nn.Dropout(l.get("p", 0.5)))
        elif t in ACTS:
            mods.append(ACTS[t]())
        elif t == "leaky_relu":
            mods.append(nn.LeakyReLU(l.get("negative_slope", 0.01)))
        elif t == "gelu":
            mods.append(nn.GELU(approximate="tanh" if l.get("approximate") else "none"))
        elif t == "residual":
            branch, r = build(l["layers"], name + ".branch.", sd, rank)
            shortcut = (build(l["shortcut"], name + ".shortcut.", sd, rank)[0]
                        if l.get("shortcut") else nn.Identity())
            mods.append(Residual(branch, shortcut))
            rank = r
        else:
            raise SystemExit("export_torch: unknown layer type " + t)
    return nn.Sequential(*mods), rank


def main(model_path, input_path, pred_path):
    with h5py.File(model_path, "r") as m:
        arch = json.loads(m.attrs["architecture"])
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in m["state_dict"].items()}
    shape = arch["input"]
    net, _ = build(arch["layers"], "", sd, len(shape))
    net.load_state_dict(sd, strict=True)
    net.eval()
    with h5py.File(input_path, "r") as f:
        x = np.asarray(f["X"])
        if x.dtype == np.uint8:
            x = x / 255.0
        x = torch.from_numpy(x.reshape([len(x)] + shape).astype(np.float32))
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1).double().numpy()
    with h5py.File(pred_path, "r") as p:
        mlq_pred = np.asarray(p["predictions"])
        mlq_probs = np.asarray(p["probabilities"], np.float64)
    agree = float((probs.argmax(axis=1) == mlq_pred).mean())
    worst = float(np.abs(probs - mlq_probs).max())
    print("export_torch: %d rows, predictions agree on %.4f, largest probability difference "
          "%.2e" % (len(x), agree, worst))
    sys.exit(0 if worst < 1e-4 and agree >= 0.999 else 1)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
