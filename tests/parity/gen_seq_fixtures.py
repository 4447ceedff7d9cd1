#!/usr/bin/python3
"""Generates seq_fixtures.json for tests/test_seq_parity.c with PyTorch 1.13.

Run once with Debian's python3-torch:
    /usr/bin/python3 tests/parity/gen_seq_fixtures.py
The output is committed; the C test does not need torch.

Each case runs one torch module (nn.Embedding, nn.LSTM, nn.GRU with
batch_first=True, nn.LayerNorm, nn.MultiheadAttention with and without the
causal mask, GPT-2's pre-norm block built of them) on a seeded input, takes the loss sum(out * dout)
for a seeded upstream gradient dout, and records the input, every
parameter under its state_dict name, dout, the output and the gradients of
the input and of every parameter, flattened row-major. Float32 values are
written with 9 significant digits, which round-trips them.
"""
import json
import os

import torch
import torch.nn as nn

torch.set_num_threads(1)
torch.manual_seed(1915)


def flat(t):
    return [float("%.9g" % v) for v in t.detach().reshape(-1).tolist()]


def record(module, x, out, params, ids=False):
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    rec = {"in": flat(x), "out": flat(out), "dout": flat(dout),
           "in_shape": list(x.shape), "out_shape": list(out.shape)}
    if not ids:
        rec["din"] = flat(x.grad)
    for name, p in params:
        rec[name] = flat(p)
        rec["d" + name] = flat(p.grad)
    return rec


cases = []

# Recurrent layers: (kind, B, T, I, H, num_layers, bias, sequence)
RNN = [
    ("lstm", 3, 5, 4, 6, 1, True, True),
    ("lstm", 2, 7, 3, 5, 2, True, False),
    ("lstm", 2, 4, 5, 3, 1, False, True),
    ("lstm", 2, 6, 8, 4, 3, True, True),
    ("gru", 3, 5, 4, 6, 1, True, True),
    ("gru", 2, 7, 3, 5, 2, True, False),
    ("gru", 2, 4, 5, 3, 1, False, True),
    ("gru", 2, 6, 8, 4, 3, True, True),
]
for kind, B, T, I, H, L, bias, seq in RNN:
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    m = cls(I, H, num_layers=L, bias=bias, batch_first=True)
    x = torch.randn(B, T, I).requires_grad_(True)
    y, _ = m(x)
    if not seq:
        y = y[:, -1]
    rec = record(m, x, y, list(m.named_parameters()))
    rec.update({"op": kind, "name": "%s B%d T%d I%d H%d L%d%s%s" % (
        kind, B, T, I, H, L, "" if bias else " no bias", "" if seq else " last"),
        "B": B, "T": T, "I": I, "H": H, "num_layers": L, "bias": bias, "sequence": seq})
    cases.append(rec)

# Embedding: (B, T, V, E)
for B, T, V, E in [(3, 6, 11, 5), (2, 9, 4, 7)]:
    m = nn.Embedding(V, E)
    x = torch.randint(0, V, (B, T))
    y = m(x)
    rec = record(m, x.float(), y, list(m.named_parameters()), ids=True)
    rec.update({"op": "embedding", "name": "embedding B%d T%d V%d E%d" % (B, T, V, E),
                "B": B, "T": T, "vocab": V, "E": E})
    cases.append(rec)

# Layer norm over the last dimension: (B, T, E) and (B, F)
for shape, eps in [((3, 5, 8), 1e-5), ((4, 12), 1e-3)]:
    m = nn.LayerNorm(shape[-1], eps=eps)
    with torch.no_grad():  # away from the init's 1 and 0
        m.weight.add_(0.5 * torch.randn_like(m.weight))
        m.bias.add_(0.5 * torch.randn_like(m.bias))
    x = torch.randn(*shape).requires_grad_(True)
    y = m(x)
    rec = record(m, x, y, list(m.named_parameters()))
    rec.update({"op": "layernorm", "name": "layernorm %s" % "x".join(map(str, shape)),
                "B": shape[0], "T": shape[1] if len(shape) == 3 else 0, "E": shape[-1],
                "eps": eps})
    cases.append(rec)


def causal_mask(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), 1)


def randomize(m):
    with torch.no_grad():  # biases away from their zero init
        for name, p in m.named_parameters():
            if "bias" in name:
                p.add_(0.3 * torch.randn_like(p))


# Self-attention: (B, T, E, heads, causal, bias)
for B, T, E, H, causal, bias in [(2, 6, 8, 2, False, True), (3, 7, 12, 3, True, True),
                                 (2, 5, 8, 1, True, False), (2, 16, 16, 4, True, True)]:
    m = nn.MultiheadAttention(E, H, bias=bias, batch_first=True)
    randomize(m)
    x = torch.randn(B, T, E).requires_grad_(True)
    y, _ = m(x, x, x, attn_mask=causal_mask(T) if causal else None, need_weights=False)
    rec = record(m, x, y, list(m.named_parameters()))
    rec.update({"op": "attention", "name": "attention B%d T%d E%d H%d%s%s" % (
        B, T, E, H, " causal" if causal else "", "" if bias else " no bias"),
        "B": B, "T": T, "E": E, "heads": H, "causal": causal, "bias": bias})
    cases.append(rec)


class Block(nn.Module):
    """GPT-2's pre-norm block, as mlq's transformer layer names it."""

    def __init__(self, E, H, causal, approximate):
        super().__init__()
        self.ln_1 = nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.ln_2 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E),
                                 nn.GELU(approximate="tanh" if approximate else "none"),
                                 nn.Linear(4 * E, E))
        self.causal = causal

    def forward(self, x):
        T = x.shape[1]
        h = self.ln_1(x)
        a, _ = self.attn(h, h, h, attn_mask=causal_mask(T) if self.causal else None,
                         need_weights=False)
        x = x + a
        return x + self.mlp(self.ln_2(x))


for B, T, E, H, causal, approx in [(2, 6, 8, 2, True, False), (2, 5, 12, 3, False, True),
                                   (2, 12, 16, 4, True, True)]:
    m = Block(E, H, causal, approx)
    randomize(m)
    with torch.no_grad():
        for ln in (m.ln_1, m.ln_2):
            ln.weight.add_(0.3 * torch.randn_like(ln.weight))
    x = torch.randn(B, T, E).requires_grad_(True)
    y = m(x)
    rec = record(m, x, y, list(m.named_parameters()))
    rec.update({"op": "transformer", "name": "transformer B%d T%d E%d H%d%s%s" % (
        B, T, E, H, " causal" if causal else "", " tanh" if approx else ""),
        "B": B, "T": T, "E": E, "heads": H, "causal": causal, "approximate": approx})
    cases.append(rec)

# Longer causal sequences (added last, so that the cases above keep their
# seeded values): mlq runs causal attention in blocks of 32 queries, and
# these cross one block boundary (T 40) and two with a part block (T 70).
for B, T, E, H in [(2, 40, 8, 2)]:
    m = nn.MultiheadAttention(E, H, batch_first=True)
    randomize(m)
    x = torch.randn(B, T, E).requires_grad_(True)
    y, _ = m(x, x, x, attn_mask=causal_mask(T), need_weights=False)
    rec = record(m, x, y, list(m.named_parameters()))
    rec.update({"op": "attention", "name": "attention B%d T%d E%d H%d causal" % (B, T, E, H),
                "B": B, "T": T, "E": E, "heads": H, "causal": True, "bias": True})
    cases.append(rec)
for B, T, E, H in [(1, 70, 8, 2)]:
    m = Block(E, H, True, False)
    randomize(m)
    with torch.no_grad():
        for ln in (m.ln_1, m.ln_2):
            ln.weight.add_(0.3 * torch.randn_like(ln.weight))
    x = torch.randn(B, T, E).requires_grad_(True)
    y = m(x)
    rec = record(m, x, y, list(m.named_parameters()))
    rec.update({"op": "transformer", "name": "transformer B%d T%d E%d H%d causal" % (B, T, E, H),
                "B": B, "T": T, "E": E, "heads": H, "causal": True, "approximate": False})
    cases.append(rec)

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "seq_fixtures.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f)
    f.write("\n")
print("%d cases" % len(cases))
