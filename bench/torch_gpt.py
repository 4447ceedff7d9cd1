"""The character Transformer of the sequence benches in PyTorch (bench/torch_seq.py,
bench/torch_char_lm.py): mlq's `embedding`, `positional`, pre-norm `transformer`
blocks (causal, exact GELU), `layernorm` and a per-step `dense` head, as
nn.Modules with PyTorch's default initialisation."""
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, T, E, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E))
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=self.mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, T=128, E=128, V=256, blocks=4, heads=4):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.wpe = nn.Embedding(T, E)
        self.blocks = nn.Sequential(*[Block(T, E, heads) for _ in range(blocks)])
        self.ln_f = nn.LayerNorm(E)
        self.head = nn.Linear(E, V)

    def forward(self, x):
        h = self.wte(x) + self.wpe.weight[: x.shape[1]]
        return self.head(self.ln_f(self.blocks(h)))
