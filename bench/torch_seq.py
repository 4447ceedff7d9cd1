#!/usr/bin/python3
"""PyTorch side of bench/seq_bench.sh: the same two recipes as bench/seq_bench.c
(the row-by-row LSTM, Adam; the character Transformer, AdamW), on random data
of the same shapes, training samples/s as median and best of REPEAT timed runs
of STEPS steps after a warm-up, and the median samples per CPU second.

usage: torch_seq.py --model lstm|gpt [--threads N] [--batch B] [--steps N] [--repeat R]
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn as nn

from torch_gpt import GPT

p = argparse.ArgumentParser()
p.add_argument("--model", choices=["lstm", "gpt"], default="lstm")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--batch", type=int, default=0)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--repeat", type=int, default=3)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(1)
T, E, V, BLOCKS, HEADS = 128, 128, 256, 4, 4


class RowLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


gpt = a.model == "gpt"
B = a.batch or (32 if gpt else 64)
model = GPT() if gpt else RowLSTM()
if gpt:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
else:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(B, 28, 28)
    y = torch.randint(0, 10, (B,))
loss_fn = nn.CrossEntropyLoss()


def step():
    opt.zero_grad()
    out = model(x)
    loss = loss_fn(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    return loss


# the warm-up as seq_bench.c's: two steps and 0.3 s at least
w0, n = time.perf_counter(), 0
while n < 2 or time.perf_counter() - w0 < 0.3:
    step()
    n += 1
rates, cpu_rates = [], []
for _ in range(a.repeat):
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        loss = step()
    rates.append(a.steps * B / (time.perf_counter() - t0))
    cpu_rates.append(a.steps * B / (time.process_time() - c0))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("model %s threads %d batch %d params %d samples/s median %.1f best %.1f per_cpu_s %.1f "
      "peak_rss_mib %.0f loss %.4f" % (a.model, a.threads, B,
                                       sum(p.numel() for p in model.parameters()),
                                       statistics.median(rates), max(rates),
                                       statistics.median(cpu_rates), rss, loss.item()))
