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
       export_torch.py MODEL.h5 DATA.h5 --loss LOSS
The second form is for models with an output per step (language models,
which mlq predict does not take): the mean cross-entropy over every
position of DATA.h5's X and y in torch must be LOSS, what mlq eval reported
for the same file.
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


class Positional(nn.Module):
    """mlq's learned positional table: x (B, T, E) + weight[:T]."""

    def __init__(self, vocab, width):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab, width))

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


def recurrent(cls):
    """nn.LSTM or nn.GRU (batch_first) returning every step, or the last
    (sequence false); a subclass, so that state_dict names stay torch's."""

    class Recurrent(cls):
        def __init__(self, sequence, *args, **kwargs):
            super().__init__(*args, batch_first=True, **kwargs)
            self.sequence = sequence

        def forward(self, x):
            y = super().forward(x)[0]
            return y if self.sequence else y[:, -1]

    return Recurrent


LSTM, GRU = recurrent(nn.LSTM), recurrent(nn.GRU)


def causal_mask(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), 1)


class SelfAttention(nn.MultiheadAttention):
    def __init__(self, width, heads, causal, bias):
        super().__init__(width, heads, bias=bias, batch_first=True)
        self.causal = causal

    def forward(self, x):
        mask = causal_mask(x.shape[1]) if self.causal else None
        return super().forward(x, x, x, attn_mask=mask, need_weights=False)[0]


class Block(nn.Module):
    """GPT-2's pre-norm block, as mlq's transformer layer names it."""

    def __init__(self, width, heads, causal, eps, approximate):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads, causal, True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width),
                                 nn.GELU(approximate="tanh" if approximate else "none"),
                                 nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


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
        elif t == "embedding":
            mods.append(nn.Embedding(l["vocab"], l["out"]))
            rank = 2
        elif t == "positional":
            mods.append(Positional(w.shape[0], w.shape[1]))
        elif t in ("lstm", "gru"):
            wi = sd[name + ".weight_ih_l0"]
            cls = LSTM if t == "lstm" else GRU
            mods.append(cls(l.get("sequence", True), wi.shape[1], l["out"],
                            num_layers=l.get("num_layers", 1), bias=l.get("bias", True)))
            rank = 2 if l.get("sequence", True) else 1
        elif t == "layernorm":
            mods.append(nn.LayerNorm(w.shape[0], eps=l.get("eps", 1e-5)))
        elif t == "attention":
            wi = sd[name + ".in_proj_weight"]
            mods.append(SelfAttention(wi.shape[1], l["heads"], l.get("causal", False),
                                      l.get("bias", True)))
        elif t == "transformer":
            wi = sd[name + ".attn.in_proj_weight"]
            mods.append(Block(wi.shape[1], l["heads"], l.get("causal", False), l.get("eps", 1e-5),
                              l.get("approximate", False)))
        elif t == "to_sequence":
            mods.append(Lambda(lambda x: x.flatten(2).transpose(1, 2)))
            rank = 2
        elif t == "seq_mean":
            mods.append(Lambda(lambda x: x.mean(dim=1)))
            rank = 1
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


def main_loss(model_path, data_path, want):
    """The mean cross-entropy of a per-step model over every position."""
    with h5py.File(model_path, "r") as m:
        arch = json.loads(m.attrs["architecture"])
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in m["state_dict"].items()}
    net, _ = build(arch["layers"], "", sd, len(arch["input"]))
    net.load_state_dict(sd, strict=True)
    net.eval()
    with h5py.File(data_path, "r") as f:
        x = torch.from_numpy(np.asarray(f["X"]).astype(np.int64))
        y = torch.from_numpy(np.asarray(f["y"]).astype(np.int64))
    total, n = 0.0, 0
    with torch.no_grad():
        for at in range(0, len(x), 256):
            z = net(x[at:at + 256])
            total += float(nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]).double(),
                                                       y[at:at + 256].reshape(-1),
                                                       reduction="sum"))
            n += y[at:at + 256].numel()
    got = total / n
    diff = abs(got - want)
    print("export_torch: %s, %d rows: torch's loss %.7f, mlq eval's %.7f (difference %.1e)" % (
        "-".join(l["type"] for l in arch["layers"]), len(x), got, want, diff))
    sys.exit(0 if diff <= 1e-5 + 1e-4 * abs(want) else 1)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 4 and args[2] == "--loss":
        main_loss(args[0], args[1], float(args[3]))
    steps = None
    if len(args) == 5 and args[3] == "--steps" and args[4].isdigit():
        steps = int(args.pop())
        args.pop()
    if len(args) != 3:
        raise SystemExit(__doc__)
    main(*args, steps=steps)
