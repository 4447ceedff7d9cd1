#!/usr/bin/python3
"""Generates ops_fixtures.json for tests/test_ops_kernels.c with PyTorch 1.13.

Run once with Debian's python3-torch:
    /usr/bin/python3 tests/parity/gen_ops_fixtures.py
The output is committed; the C test does not need torch.

Each case runs one torch module (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
nn.AdaptiveAvgPool2d(1), nn.BatchNorm1d/2d, the activations, and
nn.CrossEntropyLoss with label_smoothing: its loss and logit gradient) on a seeded
input, takes the loss sum(out * dout) for a seeded upstream gradient dout,
and records the input, the parameters, dout, the output and the gradients
of the input and of every parameter, all flattened row-major (NCHW, weights
as the module's own). Batch norm also records the running statistics
before and after the step. Float32 values are written with 9 significant
digits, which round-trips them.
"""
import json
import os

import torch
import torch.nn as nn

torch.set_num_threads(1)
torch.manual_seed(1913)


def flat(t):
    return [float("%.9g" % v) for v in t.detach().reshape(-1).tolist()]


def grad_case(module, x, extra=None):
    """Forward, backward of sum(out * dout); returns the recorded tensors."""
    x = x.clone().requires_grad_(True)
    out = module(x)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    rec = {"in": flat(x), "out": flat(out), "dout": flat(dout), "din": flat(x.grad),
           "in_shape": list(x.shape), "out_shape": list(out.shape)}
    for name, p in module.named_parameters():
        rec[name] = flat(p)
        rec["d" + name] = flat(p.grad)
    if extra:
        rec.update(extra)
    return rec


cases = []

# conv2d: (B, C, H, W, O, (KH, KW), stride, pad, bias)
CONV = [
    (2, 3, 7, 5, 4, (3, 3), 1, 1, True),   # LeNet's shape of layer, non-square input
    (2, 2, 8, 6, 3, (3, 2), 2, 1, True),   # rectangular kernel, stride 2, padding
    (3, 4, 5, 5, 2, (1, 1), 1, 0, True),   # 1x1: the direct gemm path
    (2, 1, 6, 9, 3, (5, 5), 2, 2, False),  # no bias, wide padding
    (1, 2, 4, 4, 2, (4, 4), 1, 0, True),   # kernel as large as the input: 1x1 output
    (2, 3, 9, 7, 2, (2, 2), 3, 0, True),   # stride larger than the kernel
    (2, 2, 5, 6, 3, (3, 3), 1, 2, True),   # padding 2 on a 3x3 kernel
    (2, 3, 6, 6, 4, (1, 1), 2, 1, True),   # 1x1 with stride and padding: im2col path
    (2, 3, 5, 6, 2, (5, 3), 1, 1, True),   # as wide as the input, not as high
    (1, 2, 4, 1, 2, (3, 3), 1, 1, True),   # one column
]
for B, C, H, W, O, k, s, p, bias in CONV:
    m = nn.Conv2d(C, O, k, stride=s, padding=p, bias=bias)
    rec = grad_case(m, torch.randn(B, C, H, W))
    rec.update(op="conv2d", B=B, C=C, H=H, W=W, O=O, KH=k[0], KW=k[1], stride=s, pad=p,
               has_bias=bias)
    cases.append(rec)

# pooling: (kind, B, C, H, W, k, stride, pad, integer-valued input for ties)
POOL = [
    ("maxpool", 2, 3, 6, 8, 2, 2, 0, False),
    ("maxpool", 2, 2, 7, 5, 3, 2, 1, False),
    ("maxpool", 1, 2, 5, 6, 3, 1, 1, False),
    ("maxpool", 2, 2, 6, 6, 2, 2, 0, True),   # ties: the first maximum takes the gradient
    ("maxpool", 2, 2, 7, 7, 3, 2, 1, True),
    ("maxpool", 1, 3, 9, 4, 2, 1, 0, False),  # overlapping 2x2 windows
    ("avgpool", 2, 3, 6, 8, 2, 2, 0, False),
    ("avgpool", 2, 2, 7, 5, 3, 2, 1, False),  # count_include_pad: divides by 9 at the edges
    ("avgpool", 1, 2, 5, 6, 3, 1, 1, False),
]
for kind, B, C, H, W, k, s, p, ties in POOL:
    m = (nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(k, stride=s, padding=p)
    x = torch.randint(-2, 3, (B, C, H, W)).float() if ties else torch.randn(B, C, H, W)
    rec = grad_case(m, x)
    rec.update(op=kind, B=B, C=C, H=H, W=W, KH=k, KW=k, stride=s, pad=p)
    cases.append(rec)

for B, C, H, W in [(2, 3, 4, 5), (3, 2, 7, 7)]:
    rec = grad_case(nn.AdaptiveAvgPool2d(1), torch.randn(B, C, H, W))
    rec.update(op="global_avgpool", B=B, C=C, H=H, W=W)
    cases.append(rec)

# batch norm: 2d over (B, C, H, W), 1d over (B, C); train and eval; with the
# affine parameters and running statistics away from their initial values.
for dims, shape in [(2, (4, 3, 5, 3)), (2, (2, 2, 3, 4)), (1, (8, 5)), (1, (3, 4))]:
    for training in (True, False):
        C = shape[1]
        m = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(C)
        with torch.no_grad():
            m.weight.copy_(torch.rand(C) + 0.5)
            m.bias.copy_(torch.randn(C))
            m.running_mean.copy_(torch.randn(C) * 0.3)
            m.running_var.copy_(torch.rand(C) + 0.5)
        m.train(training)
        before = {"running_mean": flat(m.running_mean), "running_var": flat(m.running_var)}
        x = torch.randn(*shape) * 2.0 + 0.7
        rec = grad_case(m, x, before)
        rec.update(op="batchnorm%dd" % dims, training=training, B=shape[0], C=C,
                   S=int(torch.tensor(shape[2:]).prod()) if dims == 2 else 1,
                   momentum=m.momentum, eps=m.eps,
                   running_mean_after=flat(m.running_mean),
                   running_var_after=flat(m.running_var),
                   num_batches_tracked=int(m.num_batches_tracked))
        cases.append(rec)

# activations on values that cover both signs, zero and the saturating tails.
ACTS = [
    ("relu", nn.ReLU(), 0.0),
    ("leaky_relu", nn.LeakyReLU(), 0.01),
    ("leaky_relu", nn.LeakyReLU(0.2), 0.2),
    ("sigmoid", nn.Sigmoid(), 0.0),
    ("tanh", nn.Tanh(), 0.0),
    ("gelu", nn.GELU(), 0.0),
    ("gelu_tanh", nn.GELU(approximate="tanh"), 0.0),
]
xs = torch.cat([torch.randn(56) * 3.0, torch.tensor([0.0, -0.0, 1e-4, -1e-4, 9.0, -9.0, 20.0, -20.0])])
for name, m, slope in ACTS:
    rec = grad_case(m, xs.reshape(4, 16))
    rec.update(op=name, slope=slope)
    cases.append(rec)

# dropout: torch's scale of the kept elements, 1 / (1 - p) in float.
for p in (0.1, 0.25, 0.5):
    m = nn.Dropout(p)
    m.train()
    x = torch.ones(4096)
    y = m(x)
    kept = y[y != 0]
    cases.append({"op": "dropout", "p": p, "scale": float("%.9g" % kept[0].item()),
                  "kept_fraction": float(kept.numel()) / x.numel()})

# init: the bound of nn.Conv2d's default init, seen on a layer of LeNet.
m = nn.Conv2d(32, 64, 3)
cases.append({"op": "conv2d_init", "C": 32, "O": 64, "KH": 3, "KW": 3,
              "max_abs_weight": float(m.weight.abs().max()),
              "max_abs_bias": float(m.bias.abs().max()),
              "std_weight": float(m.weight.std())})

# cross_entropy: nn.CrossEntropyLoss (mean) with and without label_smoothing,
# on logits spread wide enough that some rows are confident.
for smoothing in (0.0, 0.1, 0.3):
    z = (torch.randn(5, 7) * 3).requires_grad_(True)
    y = torch.randint(0, 7, (5,))
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing)(z, y)
    loss.backward()
    cases.append({"op": "cross_entropy", "label_smoothing": smoothing, "B": 5, "K": 7,
                  "z": flat(z), "y": y.tolist(), "loss": float(loss), "dz": flat(z.grad)})

out = {"generator": "tests/parity/gen_ops_fixtures.py", "torch": torch.__version__,
       "cases": cases}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
print("%s: %d cases, %d bytes" % (path, len(cases), os.path.getsize(path)))
