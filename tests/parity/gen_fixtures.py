#!/usr/bin/python3
"""Generates fixtures.json for tests/test_parity.c with PyTorch 1.13.

Run once with Debian's python3-torch: /usr/bin/python3 tests/parity/gen_fixtures.py
The output is committed; the C test does not need torch.

For each case: a small net (torch's own initial weights, shared by the cases
of the same architecture), fixed inputs and targets, then `steps` optimizer
steps on consecutive batches of `batch` rows (wrapping around; gd uses all
rows). Recorded: the loss before each step (data loss, and data loss plus the
L1/L2 penalty on weights only) and the parameters after the last step, in
mlq's layout: per layer, weight (out, in) row-major then bias (out).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

STEPS = 5
N = 32  # rows in each dataset

ACTS = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.1),
}

# Architectures: name -> (layers, activation, output, loss, dataset)
NETS = {
    "cls_relu": ([20, 16, 8, 4], "relu", "logits", "cross_entropy", "cls"),
    "cls_tanh": ([20, 16, 8, 4], "tanh", "logits", "cross_entropy", "cls"),
    "cls_sigmoid": ([20, 16, 8, 4], "sigmoid", "logits", "cross_entropy", "cls"),
    "cls_leaky_softmax": ([20, 16, 8, 4], "leaky_relu", "softmax", "cross_entropy", "cls"),
    "reg_tanh": ([20, 12, 3], "tanh", "linear", "mse", "reg"),
    "reg_sigmoid": ([20, 12, 3], "relu", "sigmoid", "mse", "reg"),
}

# (name, net, batch, optimizer as in the job spec, l1, l2)
CASES = [
    ("gd", "cls_relu", N, {"name": "gd", "lr": 0.5}, 0, 0),
    ("sgd", "cls_relu", 8, {"name": "sgd", "lr": 0.1}, 0, 0),
    ("sgd_momentum", "cls_relu", 8, {"name": "sgd", "lr": 0.1, "momentum": 0.9}, 0, 0),
    ("sgd_nesterov", "cls_relu", 8,
     {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, 0, 0),
    ("sgd_dampening", "cls_tanh", 8,
     {"name": "sgd", "lr": 0.1, "momentum": 0.8, "dampening": 0.3}, 0, 0),
    ("sgd_weight_decay", "cls_tanh", 8,
     {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, 0, 0),
    ("sgd_l1", "cls_relu", 8, {"name": "sgd", "lr": 0.1}, 0.01, 0),
    ("sgd_l2", "cls_sigmoid", 8, {"name": "sgd", "lr": 0.5}, 0, 0.1),
    ("sgd_momentum_l1_l2", "cls_tanh", 8, {"name": "sgd", "lr": 0.05, "momentum": 0.9}, 0.005, 0.05),
    ("adam", "cls_relu", 8, {"name": "adam", "lr": 0.01}, 0, 0),
    ("adam_betas", "cls_tanh", 16, {"name": "adam", "lr": 0.02, "betas": [0.8, 0.99], "eps": 1e-6}, 0, 0),
    ("adam_weight_decay", "cls_relu", 8, {"name": "adam", "lr": 0.01, "weight_decay": 0.1}, 0, 0),
    ("adam_l1", "cls_sigmoid", 8, {"name": "adam", "lr": 0.01}, 0.01, 0),
    ("adam_l2", "cls_relu", 8, {"name": "adam", "lr": 0.01}, 0, 0.05),
    ("adamw", "cls_relu", 8, {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}, 0, 0),
    ("adamw_softmax", "cls_leaky_softmax", 8, {"name": "adamw", "lr": 0.01}, 0, 0),
    ("rmsprop", "cls_relu", 8, {"name": "rmsprop", "lr": 0.01}, 0, 0),
    ("rmsprop_momentum", "cls_tanh", 8,
     {"name": "rmsprop", "lr": 0.005, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.01}, 0, 0),
    ("adam_amsgrad", "cls_relu", 8, {"name": "adam", "lr": 0.02, "amsgrad": True}, 0, 0.01),
    ("adamw_amsgrad", "cls_tanh", 8,
     {"name": "adamw", "lr": 0.02, "betas": [0.9, 0.6], "weight_decay": 0.05, "amsgrad": True},
     0, 0),
    ("rmsprop_centered", "cls_relu", 8, {"name": "rmsprop", "lr": 0.01, "centered": True}, 0, 0),
    ("rmsprop_centered_momentum", "cls_tanh", 8,
     {"name": "rmsprop", "lr": 0.005, "alpha": 0.9, "momentum": 0.5, "centered": True,
      "weight_decay": 0.01}, 0, 0),
    ("adagrad", "cls_relu", 8, {"name": "adagrad", "lr": 0.1}, 0, 0),
    ("adagrad_decay", "cls_tanh", 8,
     {"name": "adagrad", "lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.1,
      "weight_decay": 0.01}, 0, 0),
    ("mse_gd", "reg_tanh", N, {"name": "gd", "lr": 0.2}, 0, 0),
    ("mse_adam", "reg_tanh", 8, {"name": "adam", "lr": 0.01}, 0, 0.01),
    ("mse_sigmoid_sgd", "reg_sigmoid", 8, {"name": "sgd", "lr": 0.5, "momentum": 0.5}, 0.001, 0),
]


def f32list(t):
    # The shortest decimal that reads back as the same float32: exact, and
    # half the size of the double's repr.
    return [float(np.format_float_positional(v, unique=True, trim="-") if abs(v) >= 1e-4 or v == 0
                  else np.format_float_scientific(v, unique=True, trim="-"))
            for v in t.detach().reshape(-1).numpy()]


def make_data():
    g = torch.Generator().manual_seed(7)
    x_cls = torch.randn(N, 20, generator=g)
    y_cls = torch.randint(0, 4, (N,), generator=g)
    x_reg = torch.randn(N, 20, generator=g)
    w_true = torch.randn(20, 3, generator=g) * 0.3
    y_reg = torch.sigmoid(x_reg @ w_true)  # in (0, 1), fits both output kinds
    return {"cls": (x_cls, y_cls), "reg": (x_reg, y_reg)}


def make_layers(sizes, seed):
    torch.manual_seed(seed)
    return [torch.nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]


def flat_params(layers):
    out = []
    for lin in layers:
        out += f32list(lin.weight) + f32list(lin.bias)
    return out


def forward(layers, act, output, x):
    h = x
    for i, lin in enumerate(layers):
        h = lin(h)
        if i < len(layers) - 1:
            h = ACTS[act](h)
    if output == "sigmoid":
        h = torch.sigmoid(h)
    return h  # logits for cross-entropy, whichever of logits/softmax is asked


def make_optimizer(params, o):
    kw = {k: v for k, v in o.items() if k != "name"}
    name = o["name"]
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, **kw)
    if name == "adam":
        return torch.optim.Adam(params, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, **kw)
    if name == "adagrad":
        return torch.optim.Adagrad(params, **kw)
    raise ValueError(name)


def run_case(case, data, inits):
    name, net_name, batch, opt_cfg, l1, l2 = case
    sizes, act, output, loss_name, ds = NETS[net_name]
    x, y = data[ds]
    layers = make_layers(sizes, inits[net_name])
    params = [p for lin in layers for p in (lin.weight, lin.bias)]
    opt = make_optimizer(params, opt_cfg)
    losses, data_losses = [], []
    for s in range(STEPS):
        lo = (s * batch) % N
        xb, yb = x[lo:lo + batch], y[lo:lo + batch]
        opt.zero_grad()
        out = forward(layers, act, output, xb)
        if loss_name == "cross_entropy":
            loss = F.cross_entropy(out, yb)
        else:
            loss = F.mse_loss(out, yb)
        total = loss
        weights = [lin.weight for lin in layers]  # biases carry no penalty
        if l1:
            total = total + l1 * sum(w.abs().sum() for w in weights)
        if l2:
            total = total + l2 / 2 * sum((w * w).sum() for w in weights)
        total.backward()
        opt.step()
        data_losses.append(float(loss))
        losses.append(float(total))
    model = {"layers": sizes, "activation": act, "output": output}
    if act == "leaky_relu":
        model["leaky_slope"] = 0.1
    spec = {
        "kind": "train",
        "dataset": {"path": "parity.h5"},
        "model": model,
        "loss": loss_name,
        "optimizer": opt_cfg,
        "regularization": {"l1": l1, "l2": l2},
        "batch_size": batch,
    }
    return {
        "name": name,
        "net": net_name,
        "data": ds,
        "batch": batch,
        "steps": STEPS,
        "spec": spec,
        "losses": losses,
        "data_losses": data_losses,
        "final": flat_params(layers),
    }


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "fixtures.json")
    data = make_data()
    inits = {name: 100 + i for i, name in enumerate(NETS)}
    doc = {
        "generator": "tests/parity/gen_fixtures.py",
        "torch": torch.__version__,
        "rows": N,
        "data": {
            "cls": {"x": f32list(data["cls"][0]), "y_class": data["cls"][1].tolist(),
                    "inputs": 20},
            "reg": {"x": f32list(data["reg"][0]), "y": f32list(data["reg"][1]),
                    "inputs": 20, "outputs": 3},
        },
        "init": {name: flat_params(make_layers(NETS[name][0], seed))
                 for name, seed in inits.items()},
        "cases": [run_case(c, data, inits) for c in CASES],
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path}: {len(doc['cases'])} cases, {os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
