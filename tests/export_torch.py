#!/usr/bin/python3
"""Loads a model exported by mlq export into PyTorch 1.13: builds the
nn.Sequential that its architecture attribute describes, loads state_dict/
with load_state_dict(strict=True) (so every name and shape must be
PyTorch's), runs it in eval mode on the inputs of INPUT.h5 and compares with
what mlq predicted (PREDICTIONS.h5 from mlq predict). With --steps N (the
run's training steps, one batch each), every batch norm's
num_batches_tracked must be an int64 equal to what torch counts when the
same nn.Sequential takes N training steps, and the file's step attribute N.

usage: export_torch.py MODEL.h5 INPUT.h5 PREDICTIONS.h5 [--steps N]
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


def torch_counts(arch, sd, shape, steps):
    """num_batches_tracked of each batch norm after `steps` training steps of
    a fresh nn.Sequential of this architecture (two random samples a batch)."""
    net, _ = build(arch["layers"], "", sd, len(shape))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    x = torch.randn([2] + shape)
    for _ in range(steps):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    return {k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")}


def check_counts(arch, sd, shape, steps, file_step):
    want = torch_counts(arch, sd, shape, steps)
    bad = [k for k in want
           if sd[k].dtype != torch.int64 or sd[k].dim() != 0 or int(sd[k]) != int(want[k])]
    print("export_torch: %d batch norms; num_batches_tracked %s, torch's after %d steps %s; "
          "the checkpoint's step %d" % (len(want), sorted(set(int(sd[k]) for k in want)), steps,
                                        sorted(set(int(v) for v in want.values())), file_step))
    for k in bad:
        print("export_torch: %s is %s %s, torch counts %d" % (k, sd[k].dtype, sd[k].tolist(),
                                                            int(want[k])))
    return not bad and file_step == steps


def main(model_path, input_path, pred_path, steps=None):
    with h5py.File(model_path, "r") as m:
        arch = json.loads(m.attrs["architecture"])
        file_step = int(m.attrs["step"])
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in m["state_dict"].items()}
    shape = arch["input"]
    counts_ok = steps is None or check_counts(arch, sd, shape, steps, file_step)
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
    sys.exit(0 if worst < 1e-4 and agree >= 0.999 and counts_ok else 1)


if __name__ == "__main__":
    args = sys.argv[1:]
    steps = None
    if len(args) == 5 and args[3] == "--steps" and args[4].isdigit():
        steps = int(args.pop())
        args.pop()
    if len(args) != 3:
        raise SystemExit(__doc__)
    main(*args, steps=steps)
