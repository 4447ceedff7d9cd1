#!/usr/bin/python3
"""Generates cnn_fixtures.json for tests/test_cnn_parity.c with PyTorch 1.13.

Run once with Debian's python3-torch:
    /usr/bin/python3 tests/parity/gen_cnn_fixtures.py
The output is committed; the C test does not need torch.

Issue 10's two recipes, scaled down so that the fixture stays small (the
same layers in the same order, on 1x12x12 inputs with 4 and 8 channels):
  lenet: Conv2d(1, 4, 3, padding=1), ReLU, MaxPool2d(2), Conv2d(4, 8, 3,
         padding=1), ReLU, MaxPool2d(2), Flatten, Linear(72, 16), ReLU,
         Linear(16, 10)
  bn:    the same with BatchNorm2d after each conv (and the recipe's dropout
         left out: torch's masks cannot be replayed); with Adam the convs
         have no bias (bias=False, the usual idiom before a batch norm: such
         a bias does not change the loss, its gradient is rounding noise,
         and Adam turns noise into full steps of lr in either direction)
From torch's own initial weights, STEPS steps of SGD or Adam on consecutive
batches of BATCH rows with cross-entropy; recorded: the initial parameters
(state_dict order, which is mlq's tensor table order), the loss before each
step, the parameters and batch norm running statistics after the last step,
and the logits of all rows in evaluation mode after it.
"""
import json
import os

import torch
import torch.nn as nn

torch.set_num_threads(1)
torch.manual_seed(10)

STEPS = 5
BATCH = 8
N = 16


def build(bn, bias=True):
    layers = [nn.Conv2d(1, 4, 3, padding=1, bias=bias)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1, bias=bias)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(72, 16), nn.ReLU(),
               nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def flat(t):
    return [float("%.9g" % v) for v in t.detach().reshape(-1).tolist()]


def params(net):
    return [v for p in net.parameters() for v in flat(p)]


def states(net):
    out = []
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            out += flat(m.running_mean) + flat(m.running_var)
    return out


x = torch.rand(N, 1, 12, 12)
y = torch.randint(0, 10, (N,))
cases = []
for model in ("lenet", "bn"):
    for opt_name, lr in (("sgd", 0.1), ("adam", 0.01)):
        bias = not (model == "bn" and opt_name == "adam")
        net = build(model == "bn", bias)
        p0 = params(net)
        opt = (torch.optim.SGD if opt_name == "sgd" else torch.optim.Adam)(net.parameters(), lr=lr)
        losses = []
        net.train()
        for s in range(STEPS):
            lo = (s * BATCH) % N
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[lo:lo + BATCH]), y[lo:lo + BATCH])
            losses.append(float(loss))
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            logits = flat(net(x))
        cases.append({"name": "%s_%s" % (model, opt_name), "model": model, "conv_bias": bias,
                      "optimizer": opt_name, "lr": lr, "init": p0, "losses": losses,
                      "final": params(net), "state": states(net), "eval_logits": logits})

out = {"generator": "tests/parity/gen_cnn_fixtures.py", "torch": torch.__version__,
       "steps": STEPS, "batch": BATCH, "rows": N, "x": flat(x), "y": y.tolist(),
       "cases": cases}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cnn_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
print("%s: %d cases, %d bytes" % (path, len(cases), os.path.getsize(path)))
