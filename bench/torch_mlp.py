#!/usr/bin/python3
"""The benchmark's PyTorch side: the recipe mlq-trainer runs, written as a user would.

Reads X (uint8, scaled to [0, 1]) and y from the same HDF5 files with h5py,
preloads them as tensors, trains nn.Sequential(784-128-64-10, ReLU) with
cross-entropy, and prints one JSON line per epoch (samples_per_s timed over
the training loop only, as mlq does) and a summary line with the peak RSS.

OpenBLAS (torch's BLAS on Debian) picks its kernel from OPENBLAS_CORETYPE and
its thread count from OPENBLAS_NUM_THREADS when it loads: the caller sets them.

usage: torch_mlp.py --train F.h5 [--val F.h5] --batch B --epochs E --threads T
                    [--optimizer sgd|adam] [--lr LR] [--seed S]
"""
import argparse
import json
import resource
import sys
import time

import h5py
import numpy as np
import torch


def load(path):
    with h5py.File(path, "r") as f:
        x = np.asarray(f["X"])
        y = np.asarray(f["y"])
    x = torch.from_numpy(x.reshape(len(x), -1)).float().div_(255.0)
    return x, torch.from_numpy(y.astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, y = load(a.train)
    val = load(a.val) if a.val else None
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))
    loss_fn = torch.nn.CrossEntropyLoss()
    if a.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=a.lr)

    n = len(x)
    val_acc = None
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        secs = time.perf_counter() - t0
        line = {"epoch": epoch + 1, "train_loss": total / n,
                "samples_per_s": round(n / secs), "seconds": secs}
        if val is not None:
            model.eval()
            with torch.no_grad():
                correct = 0
                for i in range(0, len(val[0]), 1024):
                    out = model(val[0][i:i + 1024])
                    correct += (out.argmax(1) == val[1][i:i + 1024]).sum().item()
            val_acc = correct / len(val[0])
            line["val_accuracy"] = val_acc
        print(json.dumps(line), flush=True)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"summary": True, "epochs": a.epochs, "val_accuracy": val_acc,
                      "threads": a.threads, "peak_rss_mb": round(rss_mb, 1),
                      "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
