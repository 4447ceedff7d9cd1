#!/usr/bin/python3
"""PyTorch side of bench/char_lm_race.sh: examples/char-transformer.json's
model (4 pre-norm blocks of 128, 4 heads, causal, context 128, byte
vocabulary) trained on the windows of an `mlq dataset import-text` file for a
fixed wall-clock time, then its held-out bits per byte.

The same recipe as the mlq side: AdamW (lr 6e-4, weight decay 0.01), batch
32, a new order of the windows every epoch, PyTorch's default initialisation,
exact GELU. Prints one line of key value pairs.

usage: torch_char_lm.py --data FILE.h5 [--seconds S] [--threads N] [--seed S]

--threads 0 (the default) times 1 and 2 threads for a few steps first and
races with the faster: PyTorch's best thread setting on this machine now.
"""
import argparse
import math
import time

import h5py
import torch
import torch.nn.functional as F

from torch_gpt import GPT

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--seconds", type=float, default=600)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()

with h5py.File(a.data, "r") as f:
    X, Y = torch.from_numpy(f["X"][:]).long(), torch.from_numpy(f["y"][:]).long()
    Xv, Yv = torch.from_numpy(f["X_val"][:]).long(), torch.from_numpy(f["y_val"][:]).long()
T, E, V, BLOCKS, HEADS = X.shape[1], 128, 256, 4, 4


def build():
    torch.manual_seed(a.seed)
    global model, opt
    model = GPT(T, E, V, BLOCKS, HEADS)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.01)


def train_step(idx):
    opt.zero_grad()
    loss = F.cross_entropy(model(X[idx]).reshape(-1, V), Y[idx].reshape(-1))
    loss.backward()
    opt.step()
    return loss


def held_out_bits_per_byte():
    with torch.inference_mode():
        total = 0.0
        for at in range(0, len(Xv), 64):
            out = model(Xv[at:at + 64])
            total += F.cross_entropy(out.reshape(-1, V), Yv[at:at + 64].reshape(-1),
                                     reduction="sum").item()
    return total / Yv.numel() / math.log(2)


threads = a.threads
if threads == 0:
    rates = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        build()
        train_step(torch.arange(a.batch))
        t = time.perf_counter()
        for i in range(5):
            train_step(torch.arange(a.batch))
        rates[n] = 5 / (time.perf_counter() - t)
    threads = max(rates, key=rates.get)
torch.set_num_threads(threads)
build()
t0, c0 = time.perf_counter(), time.process_time()
steps = samples = epochs = 0
while time.perf_counter() - t0 < a.seconds:
    order = torch.randperm(len(X))
    for at in range(0, len(X), a.batch):
        if time.perf_counter() - t0 >= a.seconds:
            break
        idx = order[at:at + a.batch]
        loss = train_step(idx)
        steps += 1
        samples += len(idx)
    else:
        epochs += 1
train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
bpb = held_out_bits_per_byte()
print("torch threads %d steps %d samples %d epochs %.2f train_s %.1f cpu_s %.1f "
      "last_train_loss %.4f val_bits_per_byte %.4f" %
      (threads, steps, samples, samples / len(X), train_s, cpu_s, loss.item(), bpb))
