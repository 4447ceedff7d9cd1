#!/usr/bin/python3
"""The CNN benchmark's PyTorch side: issue 10's two recipes, as a user writes them.

  lenet: Conv2d(1, 32, 3, padding=1), ReLU, MaxPool2d(2), Conv2d(32, 64, 3,
         padding=1), ReLU, MaxPool2d(2), Flatten, Linear(3136, 128), ReLU,
         Linear(128, 10)
  bn:    the same with BatchNorm2d after each conv and Dropout(0.25) before
         the first Linear

Trains on Fashion-MNIST-shaped data (random pixels in [0, 1], random labels:
the speed does not depend on them) with cross-entropy and Adam(lr=1e-3), and
prints one JSON line per setting: samples/s (median and best of --repeat
timed runs of --steps steps, after warm-up steps), and the process's peak
RSS. Without --model/--threads it runs every (model, threads) setting, each
in its own process so that each peak RSS is its own; the same keys as
bench/cnn_bench's lines.

OpenBLAS (torch's BLAS on Debian) reads OPENBLAS_CORETYPE and its thread
count when it loads; torch.set_num_threads sets oneDNN's and torch's.

usage: torch_cnn.py [--model lenet|bn] [--threads T] [--batch B] [--steps N]
                    [--repeat R]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn


def build(model):
    layers = [nn.Conv2d(1, 32, 3, padding=1)]
    if model == "bn":
        layers.append(nn.BatchNorm2d(32))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1)]
    if model == "bn":
        layers.append(nn.BatchNorm2d(64))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    if model == "bn":
        layers.append(nn.Dropout(0.25))
    layers += [nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


def run_one(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    net = build(a.model)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randint(0, 256, (a.batch, 1, 28, 28)).float().div_(255.0)
    y = torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    rates = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        rates.append(a.steps * a.batch / (time.perf_counter() - t0))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"side": "torch", "model": a.model, "threads": a.threads,
                      "batch": a.batch, "samples_per_s": round(statistics.median(rates)),
                      "best_samples_per_s": round(max(rates)),
                      "peak_rss_mb": round(rss_mb, 1), "torch": torch.__version__}),
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["lenet", "bn"])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    if a.model and a.threads:
        run_one(a)
        return 0
    for model in ([a.model] if a.model else ["lenet", "bn"]):
        for threads in ([a.threads] if a.threads else [1, 2]):
            rc = subprocess.call([sys.executable, os.path.abspath(__file__), "--model", model,
                                  "--threads", str(threads), "--batch", str(a.batch),
                                  "--steps", str(a.steps), "--repeat", str(a.repeat)])
            if rc != 0:
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
